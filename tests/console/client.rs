//! A console user: reqwest over HTTPS to the gateway's console, trusting only the
//! gateway's own root CA (fetched from its plain-HTTP /pki/ endpoint), with a cookie
//! store like a browser's. `localhost` resolves to the console's loopback port, so the
//! certificate's host name is checked as a browser would.

use std::net::SocketAddr;

use reqwest::{Client, Method, Response, StatusCode};

use super::harness::Gateway;

pub struct ConsoleUser {
    pub http: Client,
    pub base: String,
}

/// The root CA the gateway's console certificate chains to.
fn root_ca(gw: &Gateway) -> reqwest::Certificate {
    let (status, der) = gw.http_get("/pki/root.crt");
    assert_eq!(status, 200, "the root CA certificate is published");
    reqwest::Certificate::from_der(&der).expect("root CA certificate")
}

impl ConsoleUser {
    pub fn new(gw: &Gateway) -> ConsoleUser {
        let http = Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root_ca(gw))
            .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], gw.console)))
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTPS client");
        ConsoleUser {
            http,
            base: format!("https://localhost:{}", gw.console),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let response = self.get(path).await;
        let status = response.status();
        (status, response.text().await.expect("body"))
    }

    /// POSTs a form (fields as given; add `csrf` yourself).
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.http
            .post(self.url(path))
            .form(fields)
            .send()
            .await
            .expect("POST")
    }

    /// Logs in with a local account; the answer to the login POST.
    pub async fn login(&self, name: &str, password: &str) -> Response {
        self.post_form(
            "/login",
            &[("name", name), ("password", password), ("next", "/")],
        )
        .await
    }

    /// The CSRF token of this session, as the pages carry it.
    pub async fn csrf(&self) -> String {
        let (status, page) = self.get_text("/").await;
        assert_eq!(status, StatusCode::OK, "dashboard: {page}");
        let marker = "name=\"csrf\" value=\"";
        let start = page.find(marker).expect("a csrf field on the page") + marker.len();
        let end = page[start..].find('"').expect("end of the csrf value") + start;
        page[start..end].to_string()
    }

    /// A JSON API call with a bearer token (or none).
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Response {
        let mut request = self
            .http
            .request(method, self.url(&format!("/api/v1{path}")));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("API call")
    }
}
