//! Logs captured for the whole test binary, so tests can assert on log lines and scan them for
//! secrets.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use tidegate::configuration::{LogConfig, LogFormat};

static BUFFER: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

fn buffer() -> &'static Mutex<Vec<u8>> {
    BUFFER.get_or_init(|| Mutex::new(Vec::new()))
}

#[derive(Clone, Copy)]
struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        buffer().lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        if std::env::var("TIDEGATE_TEST_LOG").is_ok() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install the capturing subscriber (JSON lines, debug level for tidegate) once.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let cfg = LogConfig {
            format: LogFormat::Json,
            filter: "info,tidegate=debug,tidegate_api=debug,tidegate_store=debug".into(),
        };
        tidegate::telemetry::init(&cfg, || Capture);
    });
}

/// Everything logged so far by any test in this binary.
pub fn captured() -> String {
    String::from_utf8_lossy(&buffer().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}
