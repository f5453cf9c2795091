//! Comparator for `benches/ceiling.sh`: the framework's floor. One
//! actix-web worker whose only handler answers every request with the
//! gateway's response for the benchmarked document: the same status,
//! header fields and body bytes, built once at start-up (actix-web adds
//! `Date` and `Content-Length` itself, as it does for the gateway). Same
//! allocator (mimalloc) and release profile as the gateway, no middleware,
//! no routing beyond the default service.
//!
//!   bare_actix --response FILE --listen 127.0.0.1:PORT

#![forbid(unsafe_code)]

#[path = "response.rs"]
mod response;

use std::process::ExitCode;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer};
use bytes::Bytes;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The precomputed parts of the one response.
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

fn main() -> ExitCode {
    let setup = (|| -> Result<(Fixed, String), String> {
        let raw = response::read(std::path::Path::new(&response::arg("response")?))?;
        Ok((fixed(&raw)?, response::arg("listen")?))
    })();
    let (fixed, listen) = match setup {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bare_actix: {e}");
            return ExitCode::FAILURE;
        }
    };
    let fixed = web::Data::new(fixed);
    let run = actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let fixed = fixed.clone();
            App::new().default_service(web::to(move || {
                let fixed = fixed.clone();
                async move {
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
