//! Which guest toolchain builds a language here, and what to install when none does.
//!
//! The check runs before the build command so a missing tool is named with the exact command
//! that installs it, instead of a shell's "command not found" halfway through.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use phasegate_model::error::Problem;

use super::Language;

/// A toolchain found on this machine.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// What was found, for the build's first line.
    pub description: String,
    /// Environment the build command runs with (on top of the inherited one).
    pub env: Vec<(String, String)>,
}

/// Finds the toolchain for `language`, for a project in `dir`. `Err` is the message to show:
/// what is missing and how to install it.
pub fn detect(language: Language, dir: &Path) -> Result<Toolchain, String> {
    match language {
        Language::Rust => rust(),
        Language::Python => python(),
        Language::Js => js(dir),
        Language::C => c(),
    }
}

fn runs(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn rust() -> Result<Toolchain, String> {
    let force = std::env::var("PHASEGATE_GUEST_TOOLCHAIN").unwrap_or_default();
    if force != "debian"
        && runs("rustup", &["target", "list", "--installed"])
            .is_some_and(|t| t.lines().any(|l| l.trim() == "wasm32-wasip2"))
    {
        return Ok(Toolchain {
            description: "rustup with the wasm32-wasip2 target".into(),
            env: Vec::new(),
        });
    }
    let debian = [
        "/usr/bin/cargo",
        "/usr/bin/rustc",
        "/usr/lib/rustlib/src/rust/library",
        "/usr/lib/wasm32-wasi",
        "/usr/bin/lld-22",
    ];
    if force != "rustup" && debian.iter().all(|p| Path::new(p).exists()) {
        let path = std::env::var("PATH").unwrap_or_default();
        return Ok(Toolchain {
            description: "Debian rustc-web with -Zbuild-std (no rustup wasm32-wasip2 target)"
                .into(),
            env: vec![
                ("PATH".into(), format!("/usr/bin:{path}")),
                ("RUSTC_BOOTSTRAP".into(), "1".into()),
                ("RUSTFLAGS".into(), "-L native=/usr/lib/wasm32-wasi".into()),
                ("CARGO_UNSTABLE_BUILD_STD".into(), "std,panic_abort".into()),
            ],
        });
    }
    Err("no Rust toolchain that builds wasm32-wasip2 components was found\n  \
         help: install one of:\n    \
         rustup target add wasm32-wasip2                                   (rustup, any machine)\n    \
         apt-get install -y rustc-web rust-web-src lld-22 wasi-libc        (Debian, without rustup downloads)"
        .into())
}

fn python() -> Result<Toolchain, String> {
    match runs("componentize-py", &["--version"]) {
        Some(version) => Ok(Toolchain {
            description: version,
            env: Vec::new(),
        }),
        None => Err("`componentize-py` was not found on PATH (Python plugins are built with it)\n  \
             help: install it with pip, e.g. in a virtual environment:\n    \
             python3 -m venv ~/.venvs/phasegate && ~/.venvs/phasegate/bin/pip install componentize-py==0.25.1\n  \
             then put ~/.venvs/phasegate/bin on PATH"
            .into()),
    }
}

fn js(dir: &Path) -> Result<Toolchain, String> {
    if runs("node", &["--version"]).is_none() {
        return Err(
            "`node` was not found on PATH (componentize-js runs on Node.js)\n  \
             help: install Node.js 20 or later, e.g. `apt-get install -y nodejs npm`"
                .into(),
        );
    }
    let local: PathBuf = dir.join("node_modules/.bin");
    let path = std::env::var("PATH").unwrap_or_default();
    let mut env = Vec::new();
    if local.join("componentize-js").exists() {
        let local = std::fs::canonicalize(&local).unwrap_or(local);
        env.push(("PATH".into(), format!("{}:{path}", local.display())));
    } else if runs("componentize-js", &["--version"]).is_none()
        && runs("componentize-js", &["--help"]).is_none()
    {
        return Err(
            "`componentize-js` was not found (in node_modules/.bin or on PATH)\n  \
             help: install it in the project folder: `npm install` (package.json lists it),\n    \
             or `npm install -g @bytecodealliance/componentize-js@0.23.0`"
                .into(),
        );
    }
    Ok(Toolchain {
        description: "componentize-js".into(),
        env,
    })
}

fn c() -> Result<Toolchain, String> {
    let candidates: Vec<String> = match std::env::var("CC") {
        Ok(cc) if !cc.is_empty() => vec![cc],
        _ => ["clang", "clang-19", "clang-20", "clang-18", "clang-21"]
            .map(String::from)
            .to_vec(),
    };
    let mut found_clang = None;
    for cc in &candidates {
        if runs(cc, &["--version"]).is_none() {
            continue;
        }
        found_clang.get_or_insert(cc.clone());
        // A sysroot with wasi-libc: clang prints the library's full path only when it finds it.
        let libc = runs(cc, &["--target=wasm32-wasi", "-print-file-name=libc.a"]);
        let builtins = runs(
            cc,
            &[
                "--target=wasm32-wasi",
                "--rtlib=compiler-rt",
                "-print-libgcc-file-name",
            ],
        );
        if libc
            .as_deref()
            .is_some_and(|p| Path::new(p).is_absolute() && Path::new(p).exists())
            && builtins.as_deref().is_some_and(|p| Path::new(p).exists())
        {
            return Ok(Toolchain {
                description: format!("{cc} with wasi-libc"),
                env: vec![("CC".into(), cc.clone())],
            });
        }
    }
    let what = match found_clang {
        Some(cc) => format!(
            "`{cc}` cannot build for wasm32-wasi here (no wasi-libc sysroot or no wasm32 compiler-rt)"
        ),
        None => "no `clang` was found on PATH (or in $CC)".to_owned(),
    };
    Err(Problem::new(what)
        .help(
            "install one of:\n    \
             apt-get install -y clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc   (Debian)\n    \
             wasi-sdk (github.com/WebAssembly/wasi-sdk), then set CC=/opt/wasi-sdk/bin/clang",
        )
        .to_string())
}
