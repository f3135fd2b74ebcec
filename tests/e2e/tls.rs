//! TLS with certificates made at test time: HTTPS upstreams verified against
//! `upstream_ca`, and the proxy listener serving TLS.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use crate::support::*;

/// A private CA and a certificate it signed for localhost and 127.0.0.1.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert, server.pem()).unwrap();
    std::fs::write(&pki.key, server_key.serialize_pem()).unwrap();
    pki
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_is_verified_against_upstream_ca() {
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let acceptor = countersign::http::tls_acceptor(&pki.cert, &pki.key).unwrap();
    let upstream = Upstream::start_with(Some(acceptor)).await;
    let url = format!("https://localhost:{}", upstream.addr.port());

    // Trusted through upstream_ca: forwarded.
    let d = Deployment::new(&url, ALLOW_ALL, "");
    let yaml = std::fs::read_to_string(d.config_path()).unwrap().replace(
        "    timeout: 1s\n",
        &format!("    timeout: 1s\n    upstream_ca: {}\n", pki.ca.display()),
    );
    std::fs::write(d.config_path(), yaml).unwrap();
    let cs = d.start().await;
    let resp = client()
        .post(format!("http://{}/v1/payouts", cs.proxy_addr))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(upstream.seen().len(), 1);
    cs.stop().await;

    // Not trusted (system roots only): refused, nothing delivered.
    let d = Deployment::new(&url, ALLOW_ALL, "");
    let cs = d.start().await;
    let resp = client()
        .post(format!("http://{}/v1/payouts", cs.proxy_addr))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("certificate"),
        "{body}"
    );
    assert_eq!(
        upstream.seen().len(),
        1,
        "an unverified upstream gets nothing"
    );
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_listener_serves_tls() {
    let upstream = Upstream::start().await;
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let d = Deployment::new(
        &upstream.url(),
        ALLOW_ALL,
        &format!(
            "tls: {{ cert: {}, key: {} }}\n",
            pki.cert.display(),
            pki.key.display()
        ),
    );
    let cs = d.start().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let tls_client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .no_proxy()
        .build()
        .unwrap();
    let resp = tls_client
        .get(format!(
            "https://localhost:{}/v1/balance",
            cs.proxy_addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = action_id(&resp);
    assert_eq!(
        payload_of(&d.db_path(), &id, "decided")["request"]["scheme"],
        "https"
    );
    // Plain HTTP to a TLS listener gets nowhere.
    assert!(client()
        .get(format!("http://{}/v1/balance", cs.proxy_addr))
        .send()
        .await
        .is_err());
    let health = tls_client
        .get(format!(
            "https://localhost:{}/healthz",
            cs.admin_addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let upstream = Upstream::start().await;
    let first = tempfile::tempdir().unwrap();
    let renewed = tempfile::tempdir().unwrap();
    let old = make_pki(first.path());
    let new = make_pki(renewed.path());
    let live = tempfile::tempdir().unwrap();
    let (cert, key) = (live.path().join("tls.crt"), live.path().join("tls.key"));
    std::fs::copy(&old.cert, &cert).unwrap();
    std::fs::copy(&old.key, &key).unwrap();
    let d = Deployment::new(
        &upstream.url(),
        ALLOW_ALL,
        &format!(
            "tls: {{ cert: {}, key: {} }}\n",
            cert.display(),
            key.display()
        ),
    );
    let cs = d.start().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let trusting = |pki: &Pki| {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let url = format!("https://localhost:{}/healthz", cs.admin_addr.port());
    assert!(trusting(&old).get(&url).send().await.is_ok());
    assert!(trusting(&new).get(&url).send().await.is_err());

    std::fs::copy(&new.cert, &cert).unwrap();
    std::fs::copy(&new.key, &key).unwrap();
    let renewed_ok = eventually(
        async || trusting(&new).get(&url).send().await.is_ok(),
        |ok| *ok,
    )
    .await;
    assert!(renewed_ok, "new connections get the renewed certificate");
    assert!(trusting(&old).get(&url).send().await.is_err());
    cs.stop().await;
}
