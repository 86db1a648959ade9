//! A real SMTP server for the tests: aiosmtpd (Python, installed by `.ci/run`) storing every
//! message it accepts in a maildir, read back as a mail reader would.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct SmtpServer {
    /// `smtp://127.0.0.1:{port}`, for `TIDEGATE_MESSAGES__SMTP_URL`.
    pub url: String,
    maildir: PathBuf,
    child: Child,
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("local addr").port()
        };
        let maildir = std::env::temp_dir().join(format!("tidegate-mail-{}", uuid::Uuid::new_v4().simple()));
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd==1.4.6; .ci/run installs it)");
        let listening = (0..100).any(|_| {
            let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if !up {
                std::thread::sleep(Duration::from_millis(50));
            }
            up
        });
        assert!(listening, "the aiosmtpd server did not start (pip install aiosmtpd==1.4.6; .ci/run installs it)");
        SmtpServer { url: format!("smtp://127.0.0.1:{port}"), maildir, child }
    }

    /// Every message received so far, quoted-printable decoded, concatenated.
    pub fn received(&self) -> String {
        let mut text = String::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in entries.flatten() {
                    text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        quoted_printable(&text)
    }

    /// The first `http://` link in the messages received so far.
    pub fn first_link(&self) -> Option<String> {
        let text = self.received();
        let start = text.find("http://")?;
        Some(text[start..].chars().take_while(|c| !c.is_whitespace()).collect())
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}

/// Decode a quoted-printable body (soft line breaks and =XX escapes), as a mail reader does.
pub fn quoted_printable(s: &str) -> String {
    let joined = s.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
