//! A real headless Chromium driven through chromedriver (WebDriver over plain HTTP on
//! loopback). The browser trusts the gateway's console certificate the way an
//! operator's browser would: the gateway's root CA is imported as a trust anchor into
//! the NSS database of a temporary `$HOME` (`$HOME/.pki/nssdb`, made with `certutil`
//! from Debian's libnss3-tools), and `acceptInsecureCerts` is false. No certificate
//! error is ignored.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::harness::{Gateway, free_port};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Where every page visited is saved as a PNG (test artefacts, never committed).
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

/// Fails the test with a clear message when a program the browser tests need is absent.
fn require(program: &str, package: &str) {
    assert!(
        Path::new(program).exists(),
        "{program} is missing: the browser tests need Debian's {package} \
         (./scripts/test installs it)"
    );
}

/// A browser session against one gateway's console.
pub struct Browser {
    pub client: Client,
    pub base: String,
    /// Prefix of this test's screenshot file names.
    prefix: String,
    shots: usize,
    driver: Child,
    _home: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium that trusts `gw`'s root CA, with a
    /// window of `width`×`height`. `prefix` names this test's screenshots.
    pub async fn start(gw: &Gateway, prefix: &str, width: u32, height: u32) -> Browser {
        Browser::launch(gw, prefix, width, height, true).await
    }

    /// A browser that does not know the gateway's root CA (an empty NSS database).
    pub async fn start_untrusting(gw: &Gateway, prefix: &str) -> Browser {
        Browser::launch(gw, prefix, 1280, 900, false).await
    }

    async fn launch(
        gw: &Gateway,
        prefix: &str,
        width: u32,
        height: u32,
        trust_root: bool,
    ) -> Browser {
        require(CHROMIUM, "chromium");
        require(CHROMEDRIVER, "chromium-driver");
        require("/usr/bin/certutil", "libnss3-tools");
        let home = tempfile::tempdir().expect("temp HOME");
        nss_db(gw, home.path(), trust_root);

        let port = free_port();
        let log = std::fs::File::create(home.path().join("chromedriver.log")).expect("log");
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg(format!("--port={port}"))
            .env("HOME", home.path())
            .stdout(Stdio::null())
            .stderr(log);
        // Its own process group, so that dropping the browser ends chromedriver and
        // every Chromium process it started, even when the test panics.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut driver = command.spawn().expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("chromedriver exited: {status}");
            }
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }

        let profile = home.path().join("profile");
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={width},{height}"),
            "--host-resolver-rules=MAP localhost 127.0.0.1".into(),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("acceptInsecureCerts".into(), json!(false));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                let log = std::fs::read_to_string(home.path().join("chromedriver.log"))
                    .unwrap_or_default();
                panic!("no browser session: {e}\nchromedriver said:\n{log}")
            });
        std::fs::create_dir_all(screenshot_dir()).expect("screenshot dir");
        // This test's screenshots of an earlier run go; other tests' stay.
        for entry in std::fs::read_dir(screenshot_dir()).expect("screenshot dir") {
            let path = entry.expect("screenshot dir entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(&format!("{prefix}-")) && name.ends_with(".png") {
                std::fs::remove_file(&path).expect("remove an old screenshot");
            }
        }
        Browser {
            client,
            base: format!("https://localhost:{}", gw.console),
            prefix: prefix.to_string(),
            shots: 0,
            driver,
            _home: home,
        }
    }

    /// Opens a console path and fails if the browser shows an error page instead
    /// (a certificate it does not trust, a refused connection).
    pub async fn open(&mut self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client.goto(&url).await.expect("navigate");
        let at = self.client.current_url().await.expect("URL");
        assert_eq!(
            at.scheme(),
            "https",
            "the browser did not load {url}; it is at {at}"
        );
        let title = self.client.title().await.expect("title");
        assert!(
            title.ends_with("— smimegate"),
            "the browser shows {title:?} at {at}, not a console page"
        );
    }

    /// The path (and query) the browser is at.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("URL");
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        }
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let found = self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element,
            Err(e) => panic!("no element {css} on {}: {e}", self.path().await),
        }
    }

    /// The text the page shows in the element `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("element text")
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Clicks `css`, which submits a form or follows a link, and waits until the
    /// browser has loaded the next page.
    pub async fn click_and_load(&self, css: &str) {
        let before = self.find("html").await;
        self.find(css).await.click().await.expect("click");
        let deadline = Instant::now() + Duration::from_secs(15);
        // The old document's root goes stale once the next page has replaced it.
        while before.tag_name().await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "clicking {css} loaded no new page"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.find("body").await;
    }

    /// Waits until the browser is at `path` on the console (after a chain of
    /// redirects and auto-submitted forms, e.g. through the IdP).
    pub async fn wait_for_console_path(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(url) = self.client.current_url().await
                && url.host_str() == Some("localhost")
                && url.path() == path
                && self.client.find(Locator::Css("body")).await.is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the browser did not reach {path}; it is at {:?}",
                self.client.current_url().await.map(|u| u.to_string())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `value` into the (emptied) input `css`.
    pub async fn fill(&self, css: &str, value: &str) {
        let input = self.find(css).await;
        input.clear().await.expect("clear");
        input.send_keys(value).await.expect("type");
    }

    /// Saves what the browser shows as `target/console-screenshots/PREFIX-NN-NAME.png`.
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        self.shots += 1;
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let path = screenshot_dir().join(format!("{}-{:02}-{name}.png", self.prefix, self.shots));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Whether the page is wider than the window (it would scroll sideways).
    pub async fn horizontal_overflow(&self) -> Option<(u64, u64)> {
        let sizes = self
            .client
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                vec![],
            )
            .await
            .expect("execute");
        let scroll = sizes[0].as_u64().expect("scrollWidth");
        let inner = sizes[1].as_u64().expect("innerWidth");
        (scroll > inner).then_some((scroll, inner))
    }

    /// Ends the browser session; chromedriver and Chromium stop when `self` drops.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The process group chromedriver leads: chromedriver and its Chromium.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

/// Makes the NSS database Chromium reads from `home/.pki/nssdb` and, if `trust_root`,
/// the gateway's root CA (from its plain-HTTP `/pki/root.crt`) a trust anchor in it.
fn nss_db(gw: &Gateway, home: &Path, trust_root: bool) {
    let (status, der) = gw.http_get("/pki/root.crt");
    assert_eq!(status, 200, "the root CA certificate is published");
    let root = home.join("gateway-root.der");
    std::fs::write(&root, der).expect("write root CA");
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).expect("nssdb dir");
    let db = format!("sql:{}", db.display());
    let root = root.display().to_string();
    let mut commands = vec![vec!["-N", "-d", &db, "--empty-password"]];
    if trust_root {
        commands.push(vec![
            "-A",
            "-d",
            &db,
            "-n",
            "smimegate test gateway root",
            "-t",
            "C,,",
            "-i",
            &root,
        ]);
    }
    for args in commands {
        let out = Command::new("certutil")
            .args(&args)
            .output()
            .expect("run certutil");
        assert!(
            out.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
