//! `corral probe URL`: one HTTP GET that exits 0 on a 2xx answer and 1 otherwise, so container
//! health checks need no curl or shell in the image.

use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::Empty;
use hyper::{Request, Uri, body::Bytes};
use hyper_util::rt::TokioIo;

/// Arguments of `corral probe`.
#[derive(Debug, clap::Args)]
pub(crate) struct ProbeArgs {
    /// The URL to GET, `http://HOST:PORT/PATH` (e.g. `http://127.0.0.1:4000/readyz`).
    url: Uri,

    /// How long connecting and answering may take together.
    #[arg(long, default_value = "2s")]
    timeout: humantime::Duration,
}

/// Runs the probe: `Ok` only for a 2xx status; the error says what went wrong.
pub(crate) async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let timeout: Duration = args.timeout.into();
    let status = tokio::time::timeout(timeout, get(&args.url))
        .await
        .map_err(|_| anyhow::anyhow!("{}: no answer within {}", args.url, args.timeout))??;
    if !status.is_success() {
        bail!("{}: {status}", args.url);
    }
    Ok(())
}

async fn get(url: &Uri) -> anyhow::Result<hyper::StatusCode> {
    if url.scheme_str() != Some("http") {
        bail!("{url}: only http:// URLs can be probed");
    }
    let host = url.host().context("the URL has no host")?;
    let port = url.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("{url}: cannot connect"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let authority = url.authority().map_or(host, |a| a.as_str());
    let request = Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "corral-probe")
        .body(Empty::<Bytes>::new())?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("{url}: request failed"))?;
    Ok(response.status())
}
