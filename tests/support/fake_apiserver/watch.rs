//! A watch response: a chunked body of one JSON event per line, as the real server streams it,
//! with bookmarks on a timer and an end after `timeoutSeconds`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval};

use super::lock;
use super::store::{Filter, Store, WatchMessage};

pub struct WatchStream {
    pub store: Arc<Mutex<Store>>,
    pub filter: Filter,
    pub rx: mpsc::UnboundedReceiver<WatchMessage>,
    /// Bookmark period, when the client asked for bookmarks.
    pub bookmarks: Option<Duration>,
    pub timeout: Option<Duration>,
}

struct State {
    stream: WatchStream,
    /// The stream's own sender: bookmarks are queued behind the changes already sent, never
    /// ahead of one (a bookmark ahead of a change would let a resumed watch skip it).
    tx: mpsc::UnboundedSender<WatchMessage>,
    bookmarks: Option<Interval>,
    deadline: Option<Instant>,
    done: bool,
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Registers `tx` as a second sender of the stream's messages; returns the body.
pub fn body(stream: WatchStream, tx: mpsc::UnboundedSender<WatchMessage>) -> Body {
    let bookmarks = stream
        .bookmarks
        .map(|p| tokio::time::interval_at(Instant::now() + p, p));
    let deadline = stream.timeout.map(|t| Instant::now() + t);
    let state = State {
        stream,
        tx,
        bookmarks,
        deadline,
        done: false,
    };
    let events = futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            tokio::select! {
                message = s.stream.rx.recv() => {
                    let item = match message? {
                        WatchMessage::Line(line) => Ok(Bytes::from(line + "\n")),
                        WatchMessage::Gone(error) => {
                            s.done = true;
                            let event = serde_json::json!({"type": "ERROR", "object": error.to_status()});
                            Ok(Bytes::from(event.to_string() + "\n"))
                        }
                        WatchMessage::End => return None,
                        WatchMessage::Abort => {
                            s.done = true;
                            Err(std::io::Error::other("watch dropped by the fake API server"))
                        }
                    };
                    return Some((item, s));
                }
                _ = tick(&mut s.bookmarks) => lock(&s.stream.store).send_bookmark(&s.stream.filter, &s.tx),
                _ = until(s.deadline) => return None,
            }
        }
    });
    Body::from_stream(events)
}
