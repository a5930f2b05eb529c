//! The gateway's event stream (`GET /v1/scopes/{scope}/events`, Server-Sent
//! Events), read on a thread of its own so a watch can wait on it with a
//! timeout. Only `event: changed` matters; comments are keep-alives, which
//! tell a live stream from a dead one.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// A stream that says nothing this long is dead (the gateway says it is
/// alive every 15 s).
const SILENT_FOR: Duration = Duration::from_secs(45);

/// What the reader heard.
enum Heard {
    Changed,
    /// Any other line: a keep-alive comment, or a field of no interest.
    Alive,
    /// The stream ended, and why.
    Ended(String),
}

/// An open event stream.
pub(crate) struct EventStream {
    heard: Receiver<Heard>,
    last_heard: Instant,
    /// The end, read while draining a burst of events.
    ended: Option<String>,
}

/// Reads events off `body` until it ends or nobody listens any more.
fn read(body: impl Read, heard: Sender<Heard>) {
    let mut lines = BufReader::new(body);
    let mut event = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        let said = match lines.read_line(&mut line) {
            Ok(0) => Heard::Ended("the gateway ended the event stream".into()),
            Err(e) => Heard::Ended(format!("the event stream broke: {e}")),
            Ok(_) => {
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    // A blank line dispatches the event.
                    if std::mem::take(&mut event) == "changed" {
                        Heard::Changed
                    } else {
                        Heard::Alive
                    }
                } else {
                    if let Some(name) = line.strip_prefix("event:") {
                        event = name.trim_start().to_string();
                    }
                    Heard::Alive
                }
            }
        };
        let ended = matches!(said, Heard::Ended(_));
        if heard.send(said).is_err() || ended {
            return;
        }
    }
}

impl EventStream {
    /// Starts reading `body`, an answer of the events endpoint.
    pub fn start(body: impl Read + Send + 'static) -> EventStream {
        let (sender, heard) = mpsc::channel();
        std::thread::spawn(move || read(body, sender));
        EventStream { heard, last_heard: Instant::now(), ended: None }
    }

    /// Waits up to `timeout` for `event: changed` (several in a row count
    /// once). `Err` says why the stream is over.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, String> {
        let deadline = Instant::now() + timeout;
        if let Some(reason) = &self.ended {
            return Err(reason.clone());
        }
        loop {
            match self.heard.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Heard::Changed) => {
                    self.last_heard = Instant::now();
                    while let Ok(more) = self.heard.try_recv() {
                        if let Heard::Ended(reason) = more {
                            self.ended = Some(reason);
                        }
                    }
                    return Ok(true);
                }
                Ok(Heard::Alive) => self.last_heard = Instant::now(),
                Ok(Heard::Ended(reason)) => return Err(reason),
                Err(RecvTimeoutError::Timeout) if self.last_heard.elapsed() > SILENT_FOR => {
                    return Err(format!("the event stream said nothing for {} s", SILENT_FOR.as_secs()))
                }
                Err(RecvTimeoutError::Timeout) => return Ok(false),
                Err(RecvTimeoutError::Disconnected) => return Err("the event stream's reader stopped".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_events_wake_and_comments_keep_alive() {
        let body = ": keep-alive\n\nevent: changed\ndata: {}\n\nevent: changed\ndata: {}\n\n: keep-alive\n\n";
        let mut stream = EventStream::start(std::io::Cursor::new(body.as_bytes().to_vec()));
        assert_eq!(stream.wait(Duration::from_secs(5)), Ok(true));
        // The second event wakes at most once more (it may come in the
        // same burst); then the end.
        let mut next = stream.wait(Duration::from_secs(5));
        if next == Ok(true) {
            next = stream.wait(Duration::from_secs(5));
        }
        assert!(matches!(&next, Err(reason) if reason.contains("ended")), "{next:?}");
    }

    #[test]
    fn other_events_do_not_wake() {
        let body = "event: other\ndata: {}\n\n";
        let mut stream = EventStream::start(std::io::Cursor::new(body.as_bytes().to_vec()));
        let next = stream.wait(Duration::from_secs(5));
        assert!(next.is_err(), "only the end: {next:?}");
    }
}
