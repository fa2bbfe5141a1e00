//! Descriptors: how many resources an instance may hold at once (`limits.descriptors`), and how
//! many files, directories and sockets it opened (recorded in the attempt's usage).
//!
//! Each open file, directory and socket is a host descriptor, so the bound keeps one plugin from
//! exhausting the process's and starving the others. It is wasmtime's resource table capacity:
//! past it, the call that would add one more traps, and the attempt fails as a `limit`. The
//! count of opens comes from the four calls that make a new one, which this file puts in front
//! of wasmtime-wasi's own: `descriptor.open-at`, `create-tcp-socket`, `create-udp-socket` and
//! `tcp-socket.accept`.

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self as fs, Descriptor, DescriptorFlags, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::bindings::sockets::network::{self, Host as _, IpAddressFamily};
use wasmtime_wasi::p2::bindings::sockets::{tcp, tcp_create_socket, udp_create_socket};
use wasmtime_wasi::p2::{SocketResult, TcpSocket};
use wasmtime_wasi::sockets::WasiSocketsView;

use crate::sandbox::Counted;
use crate::sandbox::writes::FILESYSTEM_TYPES;

/// Bounds what the instance's resource table holds at once.
pub fn bound(table: &mut ResourceTable, descriptors: u32) {
    table.set_max_capacity(usize::try_from(descriptors).unwrap_or(usize::MAX));
}

/// A socket call's result as the guest receives it, counted when it opened one.
fn counted_socket<T: Counted, R>(
    state: &mut T,
    result: SocketResult<R>,
) -> wasmtime::Result<Result<R, network::ErrorCode>> {
    let result = match result {
        Ok(opened) => Ok(opened),
        Err(e) => Err(state.sockets().convert_error_code(e)?),
    };
    if result.is_ok() {
        state.count_open();
    }
    Ok(result)
}

/// Counts each successful open (call after wasmtime-wasi is linked).
pub fn add_to_linker<T: Counted>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(FILESYSTEM_TYPES)?.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: StoreContextMut<'_, T>,
         (dir, path_flags, path, open_flags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let state = store.data_mut();
                let mut view = state.filesystem();
                let opened =
                    HostDescriptor::open_at(&mut view, dir, path_flags, path, open_flags, flags)
                        .await;
                let opened = match opened {
                    Ok(fd) => Ok(fd),
                    Err(e) => Err(fs::Host::convert_error_code(&mut view, e)?),
                };
                if opened.is_ok() {
                    state.count_open();
                }
                Ok((opened,))
            })
        },
    )?;
    linker
        .instance("wasi:sockets/tcp-create-socket@0.2.12")?
        .func_wrap(
            "create-tcp-socket",
            |mut store: StoreContextMut<'_, T>, (family,): (IpAddressFamily,)| {
                let state = store.data_mut();
                let created =
                    tcp_create_socket::Host::create_tcp_socket(&mut state.sockets(), family);
                Ok((counted_socket(state, created)?,))
            },
        )?;
    linker
        .instance("wasi:sockets/udp-create-socket@0.2.12")?
        .func_wrap_async(
            "create-udp-socket",
            |mut store: StoreContextMut<'_, T>, (family,): (IpAddressFamily,)| {
                Box::new(async move {
                    let state = store.data_mut();
                    let created =
                        udp_create_socket::Host::create_udp_socket(&mut state.sockets(), family)
                            .await;
                    Ok((counted_socket(state, created)?,))
                })
            },
        )?;
    linker.instance("wasi:sockets/tcp@0.2.12")?.func_wrap(
        "[method]tcp-socket.accept",
        |mut store: StoreContextMut<'_, T>, (listener,): (Resource<TcpSocket>,)| {
            let state = store.data_mut();
            let accepted = tcp::HostTcpSocket::accept(&mut state.sockets(), listener);
            let accepted = counted_socket(state, accepted)?;
            Ok((accepted,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
