//! A real browser for the end-to-end tests: Debian's headless Chromium driven through
//! ChromeDriver over the W3C WebDriver wire protocol (JSON over HTTP, spoken here with reqwest).
//!
//! Each [`Chrome`] is one ChromeDriver process with one session and a fresh profile directory,
//! started with the flags this closed network and a root user need. Network events come from
//! ChromeDriver's performance log (the DevTools `Network.*` events), which is how the CareLink
//! test reads the custom-scheme redirect a browser does not display.
//!
//! Binaries: `CHROMEDRIVER` (default `chromedriver` on `PATH`) and `CHROMIUM` (default
//! `/usr/bin/chromium` when present). `.ci/run` installs Debian's `chromium` and `chromium-driver`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A phone-sized viewport (CSS pixels): the connect pages must work here.
pub const PHONE: (u32, u32) = (390, 844);
/// An operator's desktop viewport: the dashboard is read here.
pub const DESKTOP: (u32, u32) = (1280, 900);

/// One ChromeDriver process and its browser session.
pub struct Chrome {
    driver: Child,
    http: reqwest::Client,
    session: String,
    base: String,
    profile: PathBuf,
}

/// A handle to an element on the current page.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Chrome {
    /// Start ChromeDriver on a free loopback port and open a headless Chromium session.
    pub async fn start() -> Chrome {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("local addr").port()
        };
        let driver_bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let mut cmd = Command::new(&driver_bin);
        cmd.arg(format!("--port={port}")).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // Its own process group, so that a failed test takes the browser down with the driver.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd.spawn().unwrap_or_else(|e| {
            panic!("{driver_bin} does not start ({e}): install Debian's chromium and chromium-driver (.ci/run does)")
        });
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("http client");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r.json::<Value>().await.map(|v| v["value"]["ready"] == true).unwrap_or(false),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready on port {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = std::env::temp_dir().join(format!("tidegate-chromium-{}", uuid::Uuid::new_v4().simple()));
        let mut options = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--lang=en-US",
                format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                format!("--user-data-dir={}", profile.display()),
            ]
        });
        let binary = std::env::var("CHROMIUM")
            .ok()
            .or_else(|| std::path::Path::new("/usr/bin/chromium").exists().then(|| "/usr/bin/chromium".to_owned()));
        if let Some(b) = binary {
            options["binary"] = json!(b);
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": {"performance": "ALL"},
            "timeouts": {"pageLoad": 30_000, "script": 10_000, "implicit": 0},
        }}});
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("chromedriver answers JSON");
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver opened no session: {resp}"))
            .to_owned();
        Chrome { driver, http, session, base, profile }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.map_err(|e| format!("{path}: {e}"))?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(format!("{path}: {} — {}", v["value"]["error"], v["value"]["message"]))
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await.unwrap_or_else(|e| panic!("webdriver {e}"))
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await.unwrap_or_else(|e| panic!("webdriver {e}"))
    }

    /// Navigate and wait for the page to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// The address bar.
    pub async fn url(&self) -> String {
        self.get("/url").await.as_str().unwrap_or_default().to_owned()
    }

    pub async fn title(&self) -> String {
        self.get("/title").await.as_str().unwrap_or_default().to_owned()
    }

    /// The visible text of the whole page.
    pub async fn body_text(&self) -> String {
        let body = self.find("body").await;
        self.text(&body).await
    }

    /// The first element matching a CSS selector, if any.
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        let v = self
            .call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css})))
            .await
            .ok()?;
        v[ELEMENT].as_str().map(|id| Element(id.to_owned()))
    }

    /// The first element matching a CSS selector (panics with the page text if there is none).
    pub async fn find(&self, css: &str) -> Element {
        match self.try_find(css).await {
            Some(e) => e,
            None => {
                let url = self.url().await;
                let source = self.get("/source").await;
                panic!("no {css:?} on {url}:\n{}", source.as_str().unwrap_or_default())
            }
        }
    }

    /// Wait up to `timeout` for an element to appear (pages may still be loading or redirecting).
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_find(css).await {
                return e;
            }
            if Instant::now() >= deadline {
                return self.find(css).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, e: &Element) {
        self.post(&format!("/element/{}/click", e.0), json!({})).await;
    }

    /// Type text into an input, as a keyboard would.
    pub async fn type_into(&self, e: &Element, text: &str) {
        self.post(&format!("/element/{}/value", e.0), json!({ "text": text })).await;
    }

    pub async fn text(&self, e: &Element) -> String {
        self.get(&format!("/element/{}/text", e.0)).await.as_str().unwrap_or_default().to_owned()
    }

    pub async fn attr(&self, e: &Element, name: &str) -> Option<String> {
        self.get(&format!("/element/{}/attribute/{name}", e.0)).await.as_str().map(str::to_owned)
    }

    /// Run a script in the page; its `return` value comes back as JSON.
    pub async fn script(&self, js: &str) -> Value {
        self.post("/execute/sync", json!({"script": js, "args": []})).await
    }

    /// Emulate a viewport (CSS pixels; `mobile` also turns on touch and the viewport meta tag).
    pub async fn viewport(&self, (width, height): (u32, u32), mobile: bool) {
        let params = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile});
        self.post("/goog/cdp/execute", json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": params})).await;
    }

    /// Whether the page fits its viewport's width (no sideways scrolling), as a phone needs.
    pub async fn fits_width(&self) -> bool {
        let v = self.script("return [document.documentElement.scrollWidth, window.innerWidth];").await;
        v[0].as_u64().unwrap_or(u64::MAX) <= v[1].as_u64().unwrap_or(0)
    }

    /// Handles of the open windows and tabs.
    pub async fn windows(&self) -> Vec<String> {
        let v = self.get("/window/handles").await;
        v.as_array().map(|a| a.iter().filter_map(|h| h.as_str().map(str::to_owned)).collect()).unwrap_or_default()
    }

    pub async fn switch_to(&self, handle: &str) {
        self.post("/window", json!({ "handle": handle })).await;
    }

    /// Close the current window or tab.
    pub async fn close_window(&self) {
        let _ = self.call(reqwest::Method::DELETE, "/window", None).await;
    }

    /// The URLs of every request the browser started since the last call, in order, from the
    /// DevTools `Network.requestWillBeSent` events (redirect targets included, even those the
    /// browser then refuses to open, such as an app's custom scheme).
    pub async fn requested_urls(&self) -> Vec<String> {
        let entries = self.post("/se/log", json!({"type": "performance"})).await;
        let mut urls = Vec::new();
        for e in entries.as_array().into_iter().flatten() {
            let Some(msg) = e["message"].as_str().and_then(|m| serde_json::from_str::<Value>(m).ok()) else {
                continue;
            };
            if msg["message"]["method"] == "Network.requestWillBeSent"
                && let Some(u) = msg["message"]["params"]["request"]["url"].as_str()
            {
                urls.push(u.to_owned());
            }
        }
        urls
    }

    /// Save a PNG of the viewport as `target/screenshots/{name}.png` (every run), and also as
    /// `docs/screenshots/{name}.png` when `TIDEGATE_DOCS_SCREENSHOTS=1` (to refresh the README's
    /// set). Returns the first path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.get("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap_or_default()).expect("a PNG");
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        let mut dirs = vec![target.join("screenshots")];
        if std::env::var("TIDEGATE_DOCS_SCREENSHOTS").is_ok_and(|v| v == "1") {
            dirs.push(root.join("docs").join("screenshots"));
        }
        for d in &dirs {
            std::fs::create_dir_all(d).expect("screenshot directory");
            std::fs::write(d.join(format!("{name}.png")), &png).expect("screenshot written");
        }
        dirs[0].join(format!("{name}.png"))
    }

    /// End the session (the browser quits) and stop ChromeDriver.
    pub async fn quit(self) {
        let _ = self.call(reqwest::Method::DELETE, "", None).await;
        // Drop stops the driver and removes the profile.
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        // The whole process group: ChromeDriver and any browser it left behind.
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", self.driver.id())]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
