//! The `tls` scenario: what TLS adds to opening a connection. Two local `execd serve`, one
//! plain and one with `--tls-cert/--tls-key` (a throwaway rcgen CA and a leaf for 127.0.0.1
//! in a temporary directory); connects alternate between them so that drift in the machine's
//! load hits both alike. Every TLS connect is a full handshake (no resumption), as from a
//! fresh client process.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::client::{tls_client_config, Conn};
use super::target;

/// Connects not measured first, on each server (page faults, lazy statics, the accept path).
const WARMUP: usize = 5;

/// Samples for one scheme.
#[derive(Default)]
pub(crate) struct Samples {
    /// TCP connect + (TLS handshake +) WebSocket handshake.
    pub(crate) connect: Vec<Duration>,
    /// The same + `initialize` → its response (+ `initialized` written).
    pub(crate) open: Vec<Duration>,
}

/// `ws://` and `wss://` samples.
pub(crate) struct TlsSamples {
    pub(crate) plain: Samples,
    pub(crate) tls: Samples,
}

/// A CA, and a leaf for 127.0.0.1 and localhost signed by it: (CA PEM, leaf PEM, key PEM).
fn pki() -> anyhow::Result<(String, String, String)> {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "execd bench CA");
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;
    Ok((ca_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem()))
}

pub(crate) fn connect_cost(iterations: usize) -> anyhow::Result<TlsSamples> {
    let (ca, cert, key) = pki().context("cannot generate the test certificates")?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert)?;
    std::fs::write(&key_path, key)?;
    let plain = target::start_local(&[])?;
    let tls = target::start_local(&[
        "--tls-cert".as_ref(),
        cert_path.as_os_str(),
        "--tls-key".as_ref(),
        key_path.as_os_str(),
    ])?;
    anyhow::ensure!(
        tls.url.starts_with("wss://"),
        "execd serve with --tls-cert printed {}, not a wss:// URL",
        tls.url
    );
    let config = tls_client_config(ca.as_bytes())?;
    let mut out = TlsSamples {
        plain: Samples::default(),
        tls: Samples::default(),
    };
    smol::block_on(async {
        for i in 0..WARMUP + iterations {
            let keep = i >= WARMUP;
            for (url, samples) in [(&plain.url, &mut out.plain), (&tls.url, &mut out.tls)] {
                let t0 = Instant::now();
                let mut c = Conn::connect_with(url, Some(&config)).await?;
                let connected = t0.elapsed();
                c.initialize().await?;
                let opened = t0.elapsed();
                c.close().await;
                if keep {
                    samples.connect.push(connected);
                    samples.open.push(opened);
                }
            }
        }
        anyhow::Ok(())
    })?;
    drop((plain, tls));
    Ok(out)
}
