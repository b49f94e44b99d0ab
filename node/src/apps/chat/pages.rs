//! The chat page, its script and style (ours, compiled in), and the official `socket.io-client`
//! bundle, read from the npm install the first time a browser asks for it.

use std::path::PathBuf;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use tokio::sync::OnceCell;

use crate::http::{HttpBody, full};

const INDEX_HTML: &str = include_str!("static/index.html");
const CHAT_JS: &str = include_str!("static/chat.js");
const CHAT_CSS: &str = include_str!("static/chat.css");

/// URL path of the client bundle, as the page loads it.
pub(crate) const BUNDLE_PATH: &str = "/assets/socket.io.min.js";

/// The chat demo's HTTP side.
#[derive(Debug)]
pub(crate) struct ChatPages {
    bundle_path: PathBuf,
    bundle: OnceCell<Bytes>,
}

impl ChatPages {
    pub(crate) fn new(bundle_path: PathBuf) -> Self {
        ChatPages {
            bundle_path,
            bundle: OnceCell::new(),
        }
    }

    /// The bundle's bytes; read once, retried on every request until the file exists.
    async fn bundle(&self) -> Option<&Bytes> {
        self.bundle
            .get_or_try_init(|| async {
                tokio::fs::read(&self.bundle_path).await.map(Bytes::from)
            })
            .await
            .inspect_err(|err| {
                tracing::warn!(%err, path = %self.bundle_path.display(), "socket.io-client bundle not readable");
            })
            .ok()
    }

    /// Answers a page request, or `None` for paths that are not the chat's.
    pub(crate) async fn respond(&self, path: &str) -> Option<Response<HttpBody>> {
        let res = match path {
            "/" | "/index.html" => {
                if self.bundle().await.is_some() {
                    full(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML)
                } else {
                    self.missing_bundle()
                }
            }
            "/chat.js" => full(StatusCode::OK, "text/javascript; charset=utf-8", CHAT_JS),
            "/chat.css" => full(StatusCode::OK, "text/css; charset=utf-8", CHAT_CSS),
            BUNDLE_PATH => match self.bundle().await {
                Some(bundle) => {
                    let mut res = full(
                        StatusCode::OK,
                        "text/javascript; charset=utf-8",
                        bundle.clone(),
                    );
                    res.headers_mut().insert(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=3600"),
                    );
                    res
                }
                None => self.missing_bundle(),
            },
            _ => return None,
        };
        Some(res)
    }

    fn missing_bundle(&self) -> Response<HttpBody> {
        let html = format!(
            "<!doctype html><meta charset=utf-8><title>Corral chat: setup needed</title>\
             <h1>The socket.io-client bundle is missing</h1>\
             <p>This node serves the official client from <code>{}</code>, which does not exist yet. \
             Run <code>npm ci</code> in the Corral checkout (or <code>./scripts/setup</code>), \
             or point <code>--client-bundle</code> at a copy of \
             <code>socket.io-client/dist/socket.io.min.js</code>, then reload.</p>",
            html_escape(&self.bundle_path.display().to_string())
        );
        full(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/html; charset=utf-8",
            html,
        )
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
