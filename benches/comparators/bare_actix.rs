//! Comparator for `benches/ceiling.sh`: the framework's floor. One
//! actix-web worker whose only handler answers every request with the
//! gateway's response for the benchmarked document: the same status,
//! header fields and body bytes, built once at start-up (actix-web adds
//! `Date` and `Content-Length` itself, as it does for the gateway). Same
//! allocator (mimalloc) and release profile as the gateway, no middleware,
//! no routing beyond the default service.
//!
//! With `--responses DIR` it is the floor for many tenants instead: one
//! precomputed response per file in DIR (the gateway's response for tenant
//! NAME, saved as DIR/NAME), chosen by the request path's last segment
//! through one `HashMap` lookup (404 when there is no such file). Serving
//! many documents in turn costs it what their bytes cost in memory and
//! nothing of a cache's bookkeeping.
//!
//!   bare_actix --response FILE --listen 127.0.0.1:PORT
//!   bare_actix --responses DIR --listen 127.0.0.1:PORT

#![forbid(unsafe_code)]

#[path = "response.rs"]
mod response;

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The precomputed parts of one response.
struct Fixed {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

fn fixed(raw: &response::RawResponse) -> Result<Fixed, String> {
    let status = StatusCode::from_u16(raw.status).map_err(|e| e.to_string())?;
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        let name = HeaderName::try_from(name.as_str()).map_err(|e| format!("{name}: {e}"))?;
        // actix-web writes these two itself.
        if name == actix_web::http::header::DATE || name == actix_web::http::header::CONTENT_LENGTH
        {
            continue;
        }
        let value = HeaderValue::try_from(value.as_str()).map_err(|e| format!("{name}: {e}"))?;
        headers.push((name, value));
    }
    Ok(Fixed {
        status,
        headers,
        body: Bytes::from(raw.body.clone()),
    })
}

/// What the handler answers: one response for every path, or one per
/// tenant by the path's last segment.
enum Responses {
    One(Fixed),
    PerTenant(HashMap<Box<str>, Fixed>),
}

impl Responses {
    fn read() -> Result<Self, String> {
        if let Ok(file) = response::arg("response") {
            return Ok(Self::One(fixed(&response::read(Path::new(&file))?)?));
        }
        let dir = response::arg("responses")
            .map_err(|_| "missing --response FILE or --responses DIR".to_string())?;
        let mut tenants = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
            let path = entry.map_err(|e| format!("{dir}: {e}"))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| format!("{}: not a UTF-8 file name", path.display()))?;
            tenants.insert(Box::from(name), fixed(&response::read(&path)?)?);
        }
        if tenants.is_empty() {
            return Err(format!("{dir}: no response files"));
        }
        Ok(Self::PerTenant(tenants))
    }

    fn for_path(&self, path: &str) -> Option<&Fixed> {
        match self {
            Self::One(fixed) => Some(fixed),
            Self::PerTenant(tenants) => tenants.get(path.rsplit('/').next().unwrap_or(path)),
        }
    }
}

fn main() -> ExitCode {
    let setup = (|| -> Result<(Responses, String), String> {
        Ok((Responses::read()?, response::arg("listen")?))
    })();
    let (responses, listen) = match setup {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bare_actix: {e}");
            return ExitCode::FAILURE;
        }
    };
    let responses = web::Data::new(responses);
    let run = actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let responses = responses.clone();
            App::new().default_service(web::to(move |req: HttpRequest| {
                let responses = responses.clone();
                async move {
                    let Some(fixed) = responses.for_path(req.path()) else {
                        return HttpResponse::with_body(StatusCode::NOT_FOUND, Bytes::new());
                    };
                    let mut res = HttpResponse::with_body(fixed.status, fixed.body.clone());
                    let headers = res.headers_mut();
                    for (name, value) in &fixed.headers {
                        headers.append(name.clone(), value.clone());
                    }
                    res
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind(&listen)?
        .run()
        .await
    });
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare_actix: {e}");
            ExitCode::FAILURE
        }
    }
}
