//! Taking a resumable session out of this instance and the value it
//! travels as (issue 17, cluster mode): [`export_begin`] takes it out of
//! delivery at once, [`park`] builds its [`Snapshot`] once its socket is let
//! go, [`take_out`] removes the connection once its queued events ran.
//! Split from `hub::session` (the session's own state) because this is the
//! part only a move between instances uses.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::*;

/// The snapshot of an exported session, once its connection's task has
/// let go of its socket (`outgoing`: its queue, whose writer is gone): its
/// window, what is still queued, and its rooms and metadata as they were
/// when it was taken out of delivery. Sent to whoever asked ([`export`]).
pub fn park(info: &ConnInfo, shared: &ConnShared, outgoing: crate::hub::shared::Outgoing) {
    let Some(session) = shared.session.as_deref() else { return };
    let queued = std::iter::from_fn(|| shared.outgoing.try_take().ok()).collect();
    drop(outgoing);
    let (snap, export) = {
        let mut st = session.lock();
        let (floor, window) = st.window.parts();
        st.window = Window::default();
        let (rooms, meta) = st.taken.take().unwrap_or_default();
        let mut snap = Snapshot {
            id: info.id.clone(),
            request: Request::of(&info.request),
            rooms,
            meta,
            token: st.token.to_string(),
            prev: st.prev.as_ref().filter(|_| st.prev_live).map(Token::to_string),
            overflow: false,
            received: st.received,
            resumes: st.resumes,
            floor,
            window,
            queued,
            events_pending: false,
        };
        // Over its bounds (its socket was dropped: it is detached now), it
        // goes without its messages and ends where it arrives.
        if let Some(why) = snap.take_overflow(session.limits) {
            log::warn!("[{}] session exported over its bounds: {why}; it ends where it arrives", info.id);
            snap.overflow = true;
        }
        (snap, st.export.take())
    };
    log::info!("[{}] session exported ({} kept, {} queued)", info.id, snap.window.len(), snap.queued.len());
    if let Some(tx) = export {
        let _ = tx.try_send(snap);
    }
}

/// The event worker of an exported session has run every event it had
/// queued (its queue ended without a close event): the connection leaves
/// the hub (unless the session came back meanwhile: that is another
/// connection under the same id). No close event, no presence change: the
/// session lives on elsewhere. The instance its snapshot went to, when
/// that said its events had not all run ([`Snapshot::events_pending`]):
/// its holder waits for a word that they have (a cluster's `Move::Ran`).
pub fn take_out(hub: &crate::hub::local::Hub, info: &ConnInfo, shared: &Arc<ConnShared>) -> Option<String> {
    hub.remove_if(&info.id, shared);
    log::debug!("[{}] the events it had queued here have run; it left this instance", info.id);
    // A copy back here already (A to B to A) waits for B's word, which
    // follows this one: not released here.
    shared.session.as_deref().and_then(Session::events_ran)
}

/// Takes the session of connection `id` out of this instance's delivery at
/// once (nothing reaches it here from now on, and it is not found, listed
/// or counted here) and starts its export: its socket, if attached, is
/// dropped without a close frame, and its snapshot comes on the returned
/// channel as soon as its connection's task has let go of it ([`park`]).
/// No close event: its event worker still runs the events it had queued
/// (their actions on it go wherever it lives then), then it leaves the hub
/// ([`take_out`]). Synchronous and short: a cluster calls it at the point
/// of Redis's order where the session moves (docs/notes17/cluster-resume.md).
/// `None` when `id` has no session here, or it ended first.
pub fn export_begin(hub: &crate::hub::local::Hub, id: &ConnId) -> Option<async_channel::Receiver<Snapshot>> {
    // The hub's own map (by id), not a scan of every session's.
    let shared = hub.shared_of(id)?;
    let session = shared.session.as_deref()?;
    let (tx, rx) = async_channel::bounded(1);
    let keys: Vec<[u8; 8]> = {
        let mut st = session.lock();
        if st.ended || st.export.is_some() || shared.has_ended() {
            return None;
        }
        // Nothing changes them once it has departed: they are the snapshot's.
        st.taken = Some(hub.snapshot(id));
        session.departed.store(true, Ordering::SeqCst);
        // No resume is handed to it here any more.
        st.ended = true;
        st.export = Some(tx);
        // Under the lock: the task attaching a socket reads it there.
        session.let_go(true);
        st.keys().collect()
    };
    // Not under the session's lock: a resume's look-up takes the map's, then the session's.
    keys.into_iter().for_each(|k| hub.sessions.forget(k));
    shared.wake();
    Some(rx)
}

/// [`export_begin`], and its snapshot.
pub async fn export(hub: &crate::hub::local::Hub, id: &ConnId) -> Option<Snapshot> {
    export_begin(hub, id)?.recv().await.ok()
}

impl Snapshot {
    /// Why this session cannot be kept where it arrives, by the rule of a
    /// detached session (it is detached until its client attaches): more
    /// came during its move than was kept for it ([`Snapshot::overflow`]),
    /// or its window and queue hold more than `limits`. Its messages are
    /// then dropped (it ends, `resume-overflow`, and its client gets 4410).
    pub fn take_overflow(&mut self, limits: Limits) -> Option<String> {
        let count = self.window.len() + self.queued.len();
        let bytes: usize = self.window.iter().chain(&self.queued).map(Message::len).sum();
        let why = if self.overflow {
            "more was kept for it during its move than --resume-buffer or --resume-buffer-bytes allow".to_owned()
        } else if count > limits.messages {
            format!("{count} messages kept for it while it moved, over --resume-buffer")
        } else if bytes > limits.bytes {
            format!("{bytes} bytes kept for it while it moved, over --resume-buffer-bytes")
        } else {
            return None;
        };
        self.floor += self.window.len() as u64;
        self.window.clear();
        self.queued.clear();
        Some(why)
    }
}

/// The request that opened a session, as a [`Snapshot`] carries it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub method: String,
    pub uri: String,
    pub query: String,
    pub remote_addr: String,
    pub remote_port: String,
    pub server_name: String,
    pub server_port: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn of(r: &RequestInfo) -> Request {
        let f = r.fields();
        Request {
            method: f.method.into(),
            uri: f.uri.into(),
            query: f.query.into(),
            remote_addr: f.remote_addr.into(),
            remote_port: f.remote_port.into(),
            server_name: f.server_name.into(),
            server_port: f.server_port.into(),
            headers: r.headers().map(|(n, v)| (n.into(), v.into())).collect(),
        }
    }

    pub fn info(&self) -> RequestInfo {
        let f = RequestFields {
            method: &self.method,
            uri: &self.uri,
            query: &self.query,
            remote_addr: &self.remote_addr,
            remote_port: &self.remote_port,
            server_name: &self.server_name,
            server_port: &self.server_port,
        };
        RequestInfo::new(f, self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }

    /// The URL path the endpoint was found by (the request target without its query).
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
}

/// A whole session as one value: what moves it to another instance
/// (cluster mode) without a close event. `ws::session::export` takes one
/// out of this instance, `ws::session::import` puts one in, detached,
/// waiting for its client for a new `--resume-grace`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: ConnId,
    pub request: Request,
    /// Sorted room names.
    pub rooms: Vec<String>,
    /// Metadata, sorted by key.
    pub meta: Vec<(String, String)>,
    /// The current resume token (base64url).
    pub token: String,
    /// The token the client last resumed with, while it is still good
    /// ([`State::prev`]): the `resumed` carrying the current one may have
    /// been lost, and the client may resume with this one anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    /// More was kept for the session than its bounds allow (messages that
    /// came during its move): it ends where it arrives, `resume-overflow`,
    /// as a detached session over its bound does (its messages are not carried).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overflow: bool,
    /// Data messages read from the client.
    pub received: u64,
    pub resumes: u32,
    /// Messages numbered up to this are acknowledged (or dropped).
    pub floor: u64,
    /// The messages numbered after `floor`, in order.
    pub window: Vec<Message>,
    /// Messages queued for the client and not numbered yet, in order.
    pub queued: Vec<Message>,
    /// Its previous instance's event worker had not run every event it had
    /// queued: the events here wait until it has (or [`HOLD_WAIT`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub events_pending: bool,
}

#[cfg(test)]
impl Snapshot {
    /// A session of `request` with token `token`, nothing kept, nothing
    /// counted (tests fill in what they check with `..`).
    pub(crate) fn bare(request: Request, token: &Token) -> Snapshot {
        Snapshot {
            id: ConnId::random(),
            request,
            rooms: vec![],
            meta: vec![],
            token: token.to_string(),
            prev: None,
            overflow: false,
            received: 0,
            resumes: 0,
            floor: 0,
            window: vec![],
            queued: vec![],
            events_pending: false,
        }
    }
}
