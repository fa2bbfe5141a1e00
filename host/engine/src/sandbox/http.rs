//! HTTP grants: outgoing `wasi:http` requests only to allow-listed hosts.

use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::Notice;

/// `wasi:http` hooks that check every outgoing request's authority against the allow-list.
pub struct HttpPolicy {
    allowed: Vec<String>,
    notice: Notice,
}

impl HttpPolicy {
    /// Allows requests to `allowed` hosts (`host` allows any port, `host:port` only that port).
    pub fn new(allowed: Vec<String>, notice: Notice) -> Self {
        HttpPolicy { allowed, notice }
    }

    fn allows(&self, host: &str, port: Option<u16>) -> bool {
        self.allowed.iter().any(|a| match a.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => {
                h.eq_ignore_ascii_case(host) && port == p.parse().ok()
            }
            _ => a.eq_ignore_ascii_case(host),
        })
    }
}

type Response = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Response {
        let uri = request.uri();
        let host = uri.host().unwrap_or("").to_owned();
        let port = uri.port_u16();
        if !self.allows(&host, port) {
            let target = match port {
                Some(p) => format!("{host}:{p}"),
                None => host.clone(),
            };
            self.notice.deny(format!(
                "denied HTTP {} {uri}: no grant allows `{target}`; add `grants.http = [\"{target}\"]` to allow it",
                request.method()
            ));
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}
