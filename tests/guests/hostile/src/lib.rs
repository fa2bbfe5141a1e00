//! A hostile test task: it attacks the sandbox in the way `config.attack` says.
//!
//! Attacks that the host stops by force (loops, bombs, floods) never return. Attacks that the
//! sandbox should *deny* return what the plugin saw, so tests can check that it was refused:
//! `{"denied": "<error>"}`, or `{"breach": "<what it got>"}` when the sandbox let it through.

use std::hint::black_box;
use std::io::{Read, Write};

use phasegate_plugin_sdk::{Error, Request, Result, Task, log};
use serde::Deserialize;
use serde_json::{Value, json};

struct Hostile;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    attack: String,
    path: String,
    addr: String,
    url: String,
    var: String,
    bytes: usize,
}

fn denied(e: impl std::fmt::Display) -> Value {
    json!({"denied": e.to_string()})
}

#[cfg(target_arch = "wasm32")]
#[expect(unsafe_code, reason = "writes raw linear memory on purpose")]
fn grow_and_touch(bytes: usize) -> Value {
    let pages = bytes.div_ceil(65536).max(1);
    let old = core::arch::wasm32::memory_grow(0, pages);
    if old == usize::MAX {
        return json!({"grown": false});
    }
    let last = (old + pages) * 65536 - 1;
    // SAFETY: `last` is the last byte of the pages just grown, which nothing else uses.
    unsafe { core::ptr::write_volatile(last as *mut u8, 7) };
    json!({"grown": pages, "end": last + 1})
}

#[cfg(target_arch = "wasm32")]
#[expect(unsafe_code, reason = "reads past the end of linear memory on purpose")]
fn read_past_end() -> Value {
    let end = core::arch::wasm32::memory_size(0) * 65536;
    // SAFETY: deliberately out of bounds; the engine must trap before this returns.
    let byte = unsafe { core::ptr::read_volatile((end + 16) as *const u8) };
    json!({"breach": format!("read {byte} at {} past the end of a {end}-byte memory", 16)})
}

/// Bytes of initialised data (part of the component's memory image) that `scatter` marks.
#[cfg(target_arch = "wasm32")]
const IMAGE_BYTES: usize = 256 << 10;
/// What those bytes hold in the image.
#[cfg(target_arch = "wasm32")]
const IMAGE_FILL: u8 = 0x11;
/// A host page: `scatter` marks every other one, so each mark is a dirty run of its own.
#[cfg(target_arch = "wasm32")]
const HOST_PAGE: usize = 4096;
/// What `scatter` writes at the start of every other host page.
#[cfg(target_arch = "wasm32")]
const MARK: &[u8; 8] = b"SECRET!!";

#[cfg(target_arch = "wasm32")]
#[repr(C, align(4096))]
struct Image([u8; IMAGE_BYTES]);

#[cfg(target_arch = "wasm32")]
static mut IMAGE: Image = Image([IMAGE_FILL; IMAGE_BYTES]);

/// The image's data and `bytes` of freshly grown memory, as (start, length, pristine byte).
#[cfg(target_arch = "wasm32")]
fn scatter_regions(bytes: usize) -> Option<[(usize, usize, u8); 2]> {
    let pages = bytes.div_ceil(65536).max(1);
    let old = core::arch::wasm32::memory_grow(0, pages);
    if old == usize::MAX {
        return None;
    }
    let image = (&raw mut IMAGE) as usize;
    Some([
        (image, IMAGE_BYTES, IMAGE_FILL),
        (old * 65536, pages * 65536, 0),
    ])
}

/// Writes [`MARK`] at the start of every other host page of the image's data and of `bytes` of
/// grown memory: hundreds of separate dirty runs for the pool to restore.
#[cfg(target_arch = "wasm32")]
#[expect(unsafe_code, reason = "writes raw linear memory on purpose")]
fn scatter(bytes: usize) -> Value {
    let Some(regions) = scatter_regions(bytes) else {
        return json!({"grown": false});
    };
    let mut marked = 0;
    for (start, len, _) in regions {
        for page in (start..start + len).step_by(2 * HOST_PAGE) {
            for (i, b) in MARK.iter().enumerate() {
                // SAFETY: inside this instance's own static or the pages it just grew.
                unsafe { core::ptr::write_volatile((page + i) as *mut u8, *b) };
            }
            marked += 1;
        }
    }
    json!({"scattered": marked})
}

/// Looks where [`scatter`] writes, in a fresh instance: every byte must be the image's.
#[cfg(target_arch = "wasm32")]
#[expect(unsafe_code, reason = "reads raw linear memory on purpose")]
fn snoop(bytes: usize) -> Value {
    let Some(regions) = scatter_regions(bytes) else {
        return json!({"grown": false});
    };
    let mut checked = 0;
    for (start, len, pristine) in regions {
        for at in start..start + len {
            // SAFETY: inside this instance's own static or the pages it just grew.
            let byte = unsafe { core::ptr::read_volatile(at as *const u8) };
            if byte != pristine {
                return json!({"breach": format!("byte {byte:#04x} at {at:#x}, where the image has {pristine:#04x}")});
            }
        }
        checked += len / HOST_PAGE;
    }
    json!({"clean": checked})
}

#[cfg(not(target_arch = "wasm32"))]
fn scatter(_: usize) -> Value {
    json!(null)
}

#[cfg(not(target_arch = "wasm32"))]
fn snoop(_: usize) -> Value {
    json!(null)
}

#[cfg(not(target_arch = "wasm32"))]
fn grow_and_touch(_: usize) -> Value {
    json!(null)
}

#[cfg(not(target_arch = "wasm32"))]
fn read_past_end() -> Value {
    json!(null)
}

/// A hoarder refused: keeps what it holds a second longer (so tasks that start meanwhile
/// find nothing left, were the host's descriptors its to take), then says what it got.
fn hold(opened: usize, error: String) -> Value {
    std::thread::sleep(std::time::Duration::from_secs(1));
    json!({"opened": opened, "denied": error})
}

/// A `&str` whose bytes are not UTF-8, to pass to the host (which must refuse it).
#[expect(unsafe_code, reason = "builds an invalid string on purpose")]
fn invalid_utf8() -> &'static str {
    static BYTES: [u8; 4] = [0x66, 0xff, 0xfe, 0x6f];
    // SAFETY: not safe by Rust's rules on purpose; the string is only handed to the host,
    // whose canonical ABI lifting validates it.
    unsafe { std::str::from_utf8_unchecked(black_box(&BYTES)) }
}

fn recurse(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        black_box(recurse(black_box(n - 1)) + 1)
    }
}

impl Task for Hostile {
    type Input = Value;
    type Config = Config;
    type Output = Value;

    fn run(req: Request<Value, Config>) -> Result<Value> {
        let c = req.config;
        log::info(&format!(
            "invoked {}/{} attempt {}",
            req.phase, req.task, req.attempt
        ));
        Ok(match c.attack.as_str() {
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = black_box(x.wrapping_add(1));
                }
            }
            "sleep-forever" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                json!("woke up")
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "recursion" => json!(recurse(black_box(u64::MAX))),
            "giant-output" => json!("x".repeat(if c.bytes > 0 { c.bytes } else { 8 << 20 })),
            "log-flood" => {
                for i in 0..100_000 {
                    log::info(&format!("flood line {i}"));
                }
                json!("flooded")
            }
            "stdout-flood" => {
                let line = "y".repeat(1023);
                let mut out = std::io::stdout();
                for _ in 0..(16 << 10) {
                    writeln!(out, "{line}").map_err(|e| Error::failed(e.to_string()))?;
                }
                json!("printed 16 MiB")
            }
            "trap" => {
                #[cfg(target_arch = "wasm32")]
                core::arch::wasm32::unreachable();
                #[cfg(not(target_arch = "wasm32"))]
                json!(null)
            }
            "panic" => panic!("hostile plugin panics on purpose"),
            // Grows linear memory by `bytes` and writes its last byte, so the pool slot this
            // instance leaves behind has been used that far.
            "grow" => grow_and_touch(c.bytes),
            // Reads just past the end of its memory: must trap, whatever an earlier instance
            // of the same slot grew to.
            "read-past-end" => read_past_end(),
            // Marks hundreds of separate pages, in the memory image and beyond it; `snoop`, in
            // the next instance, looks for the marks.
            "scatter" => scatter(c.bytes),
            "snoop" => snoop(c.bytes),
            "read-file" => match std::fs::read_to_string(&c.path) {
                Ok(text) => json!({"breach": text}),
                Err(e) => denied(e),
            },
            "write-file" => {
                match std::fs::File::create(&c.path).and_then(|mut f| f.write_all(b"pwned")) {
                    Ok(()) => json!({"breach": "wrote the file"}),
                    Err(e) => denied(e),
                }
            }
            "list-dir" => match std::fs::read_dir(&c.path) {
                Ok(entries) => {
                    json!({"breach": entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>()})
                }
                Err(e) => denied(e),
            },
            "env" => match std::env::var(&c.var) {
                Ok(v) => json!({"breach": v}),
                Err(e) => denied(e),
            },
            "env-all" => json!({"vars": std::env::vars().map(|(k, _)| k).collect::<Vec<_>>()}),
            "connect" => connect(&c.addr),
            "http" => http_get(&c.url),
            "clock" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let mut bytes = [0u8; 8];
                let random = wasip2::random::random::get_random_bytes(8);
                bytes.copy_from_slice(&random);
                json!({"wall": now, "random": u64::from_le_bytes(bytes)})
            }
            "read-stdin" => {
                let mut s = String::new();
                match std::io::stdin().read_to_string(&mut s) {
                    Ok(_) if s.is_empty() => denied("stdin is empty"),
                    Ok(_) => json!({"breach": s}),
                    Err(e) => denied(e),
                }
            }
            "well-behaved" => json!({"ok": true}),
            // Opens `path` `bytes` times, keeping every handle (0: until refused).
            "hoard-files" => {
                let mut kept = Vec::new();
                while c.bytes == 0 || kept.len() < c.bytes {
                    match std::fs::File::open(&c.path) {
                        Ok(f) => kept.push(f),
                        Err(e) => return Ok(hold(kept.len(), e.to_string())),
                    }
                }
                json!({"opened": kept.len()})
            }
            // Creates `bytes` TCP sockets, keeping every one (0: until refused).
            "hoard-sockets" => {
                use wasip2::sockets::network::IpAddressFamily;
                use wasip2::sockets::tcp_create_socket::create_tcp_socket;
                let mut kept = Vec::new();
                while c.bytes == 0 || kept.len() < c.bytes {
                    match create_tcp_socket(IpAddressFamily::Ipv4) {
                        Ok(s) => kept.push(s),
                        Err(e) => return Ok(hold(kept.len(), format!("{e:?}"))),
                    }
                }
                json!({"opened": kept.len()})
            }
            // Writes `bytes` bytes to `path` in 64 KiB writes through a file stream (what
            // `std::fs` does); a refused write fails the task with what the guest saw.
            "fill-disk" => {
                let mut f =
                    std::fs::File::create(&c.path).map_err(|e| Error::failed(e.to_string()))?;
                let chunk = vec![b'x'; 64 << 10];
                let mut left = c.bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    f.write_all(&chunk[..n])
                        .map_err(|e| Error::failed(format!("write failed: {e}")))?;
                    left -= n;
                }
                json!({"wrote": c.bytes})
            }
            // As `fill-disk`, with positioned writes (`descriptor.write`) into `path` under the
            // first preopened directory; with `var = "stream"`, through the file's output stream
            // directly (not through wasi-libc), asking `filesystem-error-code` what failed.
            "fill-disk-at" => fill_at(&c.path, c.bytes, &c.var).map_err(Error::failed)?,
            // Grows `path` to `bytes` bytes without writing them (`set-size`).
            "grow-file" => {
                let f = std::fs::File::create(&c.path).map_err(|e| Error::failed(e.to_string()))?;
                f.set_len(c.bytes as u64)
                    .map_err(|e| Error::failed(format!("set_len failed: {e}")))?;
                json!({"grown": c.bytes})
            }
            "exit" => std::process::exit(3),
            "bad-utf8" => {
                log::info(invalid_utf8());
                json!({"breach": "the host took a string that is not UTF-8"})
            }
            // One host call carrying `bytes` bytes.
            "big-hostcall" => {
                log::info(&"x".repeat(c.bytes));
                json!({"breach": "the host took it"})
            }
            other => return Err(Error::invalid_config(format!("unknown attack `{other}`"))),
        })
    }
}

/// `how`: "" for positioned writes, "stream" for the file's output stream, "read-only" for
/// positioned writes through a descriptor opened for reading only.
fn fill_at(path: &str, bytes: usize, how: &str) -> std::result::Result<Value, String> {
    let stream = how == "stream";
    use wasip2::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    let dirs = wasip2::filesystem::preopens::get_directories();
    let (dir, _) = dirs.first().ok_or("no preopened directory")?;
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut file = dir
        .open_at(
            PathFlags::empty(),
            name,
            OpenFlags::CREATE,
            DescriptorFlags::WRITE,
        )
        .map_err(|e| format!("open: {e:?}"))?;
    if how == "read-only" {
        // Created above; opened again for reading only.
        file = dir
            .open_at(
                PathFlags::empty(),
                name,
                OpenFlags::empty(),
                DescriptorFlags::READ,
            )
            .map_err(|e| format!("open: {e:?}"))?;
    }
    if stream {
        use wasip2::io::streams::StreamError;
        let out = file
            .write_via_stream(0)
            .map_err(|e| format!("stream: {e:?}"))?;
        let chunk = [b'z'; 4096];
        for at in (0..bytes).step_by(chunk.len()) {
            let n = (bytes - at).min(chunk.len());
            match out.blocking_write_and_flush(&chunk[..n]) {
                Ok(()) => {}
                Err(StreamError::LastOperationFailed(e)) => {
                    let code = wasip2::filesystem::types::filesystem_error_code(&e);
                    return Err(format!("stream write at {at} failed: {code:?}"));
                }
                Err(StreamError::Closed) => return Err("stream closed".into()),
            }
        }
        return Ok(json!({"wrote": bytes}));
    }
    let chunk = vec![b'y'; 64 << 10];
    let mut at = 0;
    while at < bytes {
        let n = (bytes - at).min(chunk.len());
        file.write(&chunk[..n], at as u64)
            .map_err(|e| format!("write at {at} failed: {e:?}"))?;
        at += n;
    }
    Ok(json!({"wrote": bytes}))
}

fn connect(addr: &str) -> Value {
    use wasip2::sockets::network::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
    let Some((ip, port)) = addr.rsplit_once(':') else {
        return denied("bad addr");
    };
    let octets: Vec<u8> = ip.split('.').filter_map(|o| o.parse().ok()).collect();
    let (Ok(port), [a, b, c, d]) = (port.parse::<u16>(), octets.as_slice()) else {
        return denied("bad addr");
    };
    let network = wasip2::sockets::instance_network::instance_network();
    let socket = match wasip2::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4)
    {
        Ok(s) => s,
        Err(e) => return denied(format!("create: {e:?}")),
    };
    let remote = IpSocketAddress::Ipv4(Ipv4SocketAddress {
        port,
        address: (*a, *b, *c, *d),
    });
    if let Err(e) = socket.start_connect(&network, remote) {
        return denied(format!("connect: {e:?}"));
    }
    let pollable = socket.subscribe();
    loop {
        pollable.block();
        match socket.finish_connect() {
            Ok(_) => return json!({"breach": format!("connected to {addr}")}),
            Err(wasip2::sockets::network::ErrorCode::WouldBlock) => continue,
            Err(e) => return denied(format!("connect: {e:?}")),
        }
    }
}

fn http_get(url: &str) -> Value {
    use wasip2::http::types::{Fields, Method, OutgoingRequest, Scheme};
    let Some(rest) = url.strip_prefix("http://") else {
        return denied("only http:// urls");
    };
    let (authority, path) = rest
        .split_once('/')
        .map(|(a, p)| (a, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(&path));
    let future = match wasip2::http::outgoing_handler::handle(request, None) {
        Ok(f) => f,
        Err(e) => return denied(format!("{e:?}")),
    };
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => json!({"breach": format!("HTTP {}", response.status())}),
        Some(Ok(Err(e))) => denied(format!("{e:?}")),
        other => denied(format!("{other:?}")),
    }
}

phasegate_plugin_sdk::export_task!(Hostile);
