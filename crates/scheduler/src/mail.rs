//! Patient messages over SMTP (lettre, rustls only).

use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `smtp://host:port` (plain, for a local relay), `smtp://host:587?tls=required` (STARTTLS) or
    /// `smtps://host:465`; credentials may be in the URL (it is a secret).
    pub smtp_url: SecretString,
    pub from: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail settings: {0}")]
    Config(String),
    #[error("sending failed: {0}")]
    Send(String),
}

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from.to_string()).finish()
    }
}

impl Mailer {
    pub fn new(s: &MailSettings) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(s.smtp_url.expose_secret())
            .map_err(|_| MailError::Config("messages.smtp_url is not a valid smtp:// or smtps:// URL".into()))?
            .timeout(Some(std::time::Duration::from_secs(20)))
            .build();
        let from = s.from.parse().map_err(|_| MailError::Config("messages.from is not an e-mail address".into()))?;
        Ok(Self { transport, from })
    }

    /// Send a plain-text message.
    pub async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|_| MailError::Send("the recipient address is not valid".into()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::Send(e.to_string()))?;
        // The error text names the server's reply, never the message body (which holds the link).
        self.transport.send(message).await.map(|_| ()).map_err(|e| {
            MailError::Send(if e.is_permanent() {
                "permanent SMTP rejection".into()
            } else {
                "SMTP unavailable".into()
            })
        })
    }
}
