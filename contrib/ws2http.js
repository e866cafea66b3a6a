/*! ws2http.js: a WebSocket that survives network blips, for ws2http's resumable sessions.
 *
 * Served by ws2http at /ws2http.js (the copy in the ws2http repository is contrib/ws2http.js);
 * no dependencies, no build step, plain ES2017. Docs: docs/CLIENT.md; wire contract: docs/PROTOCOL.md,
 * "Resumable sessions". MIT OR Apache-2.0, like ws2http.
 *
 *   const ws = new Ws2httpSocket("ws://" + location.host + "/chat.php?room=lobby");
 *   ws.onopen = () => {};             // the first session is up
 *   ws.onmessage = (e) => e.data;     // app messages only, each exactly once, in order
 *   ws.onreset = (e) => {};           // the session was lost and a new one started: reload state
 *   ws.onstatus = (e) => e.status;    // "connecting" | "open" | "reconnecting" | "closed"
 *   ws.onclose = (e) => e.code;       // final only
 *   ws.send(data);                    // queued while reconnecting, re-sent after a resume if the server missed it
 *   ws.close(1000, "bye");            // final
 *
 * How: the socket offers the subprotocol ws2http.session.v1; the server's first message is
 * {"ws2http":"session","id","token"}. When the socket drops without a close frame, the helper reconnects
 * (backoff with jitter) offering ws2http.resume.TOKEN.RECEIVED (RECEIVED = app messages it has had on
 * the session); the server answers {"ws2http":"resumed","token","received":M,"replayed":K}, replays
 * every message after RECEIVED, and the helper re-sends its messages after M. A server that does not
 * select the subprotocol (--resume-grace 0, a --per-connection endpoint, an older ws2http) gets plain
 * reconnects instead: each one a new connection, announced through onreset.
 */
(function (root) {
  "use strict";

  const SESSION = "ws2http.session.v1";
  // Offered too, for a ws2http that does not offer sessions on the endpoint to select: a browser fails a
  // handshake whose 101 selects none of the offered subprotocols.
  const PLAIN = "ws2http.plain";
  const RESUME = "ws2http.resume.";
  // The close code of a socket left for a resume on another: a drop to the server, not a close.
  const RESUMING = 4499;
  const EXPIRED = 4410; // the session is gone (expired, unknown, a gap): start over
  const BAD_RESUME = 4400; // the server did not understand the resume: start over
  // Close codes from the server after which reconnecting is worth it (a final close otherwise): with a
  // token the helper resumes first (1012: the instance restarts and handed the session to another one
  // of its cluster), and starts a new session only when the resume is refused (4410).
  const RECONNECT_CODES = [1001, 1012, 1013];
  const DEFAULTS = {
    minDelay: 250, // ms, the first reconnect's backoff
    maxDelay: 10000, // ms, the longest backoff
    connectTimeout: 10000, // ms a socket may take to open and say which session it is
    maxBuffer: 1000, // messages kept for re-sending (sent but not known to be received, plus queued)
    maxBufferBytes: 1 << 20, // their bytes
    maxRetries: Infinity, // reconnect attempts in a row before giving up (onclose 1006)
    reconnectCodes: RECONNECT_CODES,
    protocols: [], // subprotocols offered besides ws2http's (plain mode only selects one of these)
    session: true, // false: never ask for a session (plain reconnects only)
    binaryType: "blob", // as WebSocket's binaryType; also settable later
    WebSocket: null, // the WebSocket class (default: the global one)
  };

  function byteSize(data) {
    if (typeof data === "string") return root.TextEncoder ? new root.TextEncoder().encode(data).length : data.length * 3;
    if (data && typeof data.byteLength === "number") return data.byteLength; // ArrayBuffer, typed array, DataView
    if (data && typeof data.size === "number") return data.size; // Blob
    return 0;
  }

  class Ws2httpSocket {
    constructor(url, options) {
      this.url = String(url);
      this.options = Object.assign({}, DEFAULTS, options || {});
      this._binaryType = this.options.binaryType || "blob";
      this.id = null; // the connection id on the server (null in plain mode)
      this.status = "connecting";
      this.resumable = null; // true: a session; false: the server does not offer sessions; null: not known yet
      this.resets = 0; // sessions lost so far
      this.resumes = 0; // successful resumes so far
      this.onopen = this.onmessage = this.onclose = this.onreset = this.onstatus = null;
      this._token = null;
      this._received = 0; // app messages had on this session (what the server numbers)
      this._outbox = []; // [{seq, data, size, written}], seq ascending: unsent, and sent but maybe not received
      this._outboxBytes = 0;
      this._seq = 0; // the last seq given to a message of this session
      this._ws = null;
      this._opened = false; // a first session (or plain connection) has been up
      this._attempt = 0;
      this._timer = null;
      this._offlineSeen = false;
      this._closed = false;
      this._resetReason = null;
      this._offerSession = this.options.session !== false;
      this._onOnline = () => this._networkBack();
      this._onOffline = () => { this._offlineSeen = true; };
      if (root.addEventListener) {
        root.addEventListener("online", this._onOnline);
        root.addEventListener("offline", this._onOffline);
      }
      this._connect();
    }

    /** WebSocket-like: 0 connecting (first time), 1 open, 2 reconnecting counts as 0, 3 closed. */
    get readyState() {
      return { connecting: 0, reconnecting: 0, open: 1, closing: 2, closed: 3 }[this.status];
    }

    /** As WebSocket's ("blob" or "arraybuffer"), for this socket and the ones after it. */
    get binaryType() {
      return this._binaryType;
    }

    set binaryType(value) {
      this._binaryType = value;
      if (this._ws) this._ws.binaryType = value;
    }

    /** Messages not yet known to be received by the server (written or queued). */
    get bufferedCount() {
      return this._outbox.length;
    }

    /**
     * Sends now, or queues until the (re)connection is up. Returns false (and drops the message)
     * when the queue is full of messages never written (maxBuffer / maxBufferBytes) or after close().
     */
    send(data) {
      if (this._closed) return false;
      const size = byteSize(data);
      while (this._outbox.length && (this._outbox.length >= this.options.maxBuffer ||
          this._outboxBytes + size > this.options.maxBufferBytes)) {
        if (!this._outbox[0].written) return false; // only unsent messages left: refuse, never lose silently
        this._shift();
      }
      const entry = { seq: ++this._seq, data, size, written: false };
      this._outbox.push(entry);
      this._outboxBytes += size;
      if (this.status === "open") this._write(entry);
      return true;
    }

    /** Ends the session for good (the server runs its close event now). */
    close(code, reason) {
      if (this._closed) return;
      this._closed = true;
      this._cleanup();
      const ws = this._ws;
      this._ws = null;
      if (ws && ws.readyState === 1) {
        ws.onclose = (e) => this._final(e.code, e.reason, e.wasClean);
        ws.onmessage = null;
        this._setStatus("closing");
        ws.close(code === undefined ? 1000 : code, reason);
      } else {
        if (ws) this._abandon(ws);
        this._final(code === undefined ? 1000 : code, reason || "", true);
      }
    }

    // -- connecting --------------------------------------------------------

    _connect() {
      this._timer = null;
      const Impl = this.options.WebSocket || root.WebSocket;
      const protocols = (this._offerSession ? [SESSION, PLAIN] : []).concat(this.options.protocols || []);
      if (this._token !== null) protocols.splice(1, 0, RESUME + this._token + "." + this._received);
      let ws;
      try {
        ws = new Impl(this.url, protocols);
      } catch (err) {
        // A bad URL: nothing a retry fixes.
        this._closed = true;
        this._cleanup();
        this._final(1006, String(err && err.message || err), false);
        return;
      }
      ws.binaryType = this._binaryType;
      this._ws = ws;
      let hello = false; // the session message (or a plain open) has been seen on this socket
      const giveUp = setTimeout(() => { if (this._ws === ws && !hello) this._lost(ws, 1006, "timed out"); },
        this.options.connectTimeout);
      ws.onopen = () => {
        if (ws.protocol === SESSION) return; // wait for the session message
        hello = true;
        clearTimeout(giveUp);
        this._plainOpen();
      };
      ws.onmessage = (e) => {
        if (hello) {
          this._received += 1;
          if (this.onmessage) this.onmessage(e);
          return;
        }
        hello = true;
        clearTimeout(giveUp);
        this._sessionMessage(ws, e.data);
      };
      ws.onclose = (e) => {
        clearTimeout(giveUp);
        if (this._ws !== ws) return;
        this._socketClosed(ws, e, hello);
      };
    }

    _sessionMessage(ws, data) {
      let m = null;
      try { m = JSON.parse(data); } catch (err) { m = null; }
      if (m && m.ws2http === "resumed" && this._token !== null) {
        this._token = String(m.token);
        this.id = String(m.id);
        this.resumes += 1;
        if (!this._rewind(Number(m.received))) {
          // The server missed messages this side no longer keeps: the session cannot continue exactly.
          this._ws = null;
          ws.onclose = ws.onmessage = null;
          ws.close(1000, "client lost messages to re-send");
          this._newSession("the server missed messages the client no longer keeps");
          return;
        }
        this._up(true);
      } else if (m && m.ws2http === "session") {
        const wasSession = this._opened;
        this._token = String(m.token);
        this.id = String(m.id);
        this.resumable = true;
        this._startSession(wasSession ? this._resetReason || "the session could not be resumed" : null);
        this._resetReason = null;
      } else {
        // Not the contract: treat as a plain connection whose first message is data.
        this._received = 0;
        this.resumable = false;
        this._plainOpen();
        this._received += 1;
        if (this.onmessage) this.onmessage({ type: "message", data });
      }
    }

    // The first socket of a new session is up (after a reset: the app reloads state first).
    _startSession(why) {
      const unconfirmed = this._renumber();
      this._received = 0;
      const first = !this._opened;
      this._opened = true;
      if (!first) {
        this.resets += 1;
        if (this.onreset) this.onreset({ type: "reset", id: this.id, reason: why, unconfirmed });
      }
      this._up();
      if (first && this.onopen) this.onopen({ type: "open", id: this.id });
    }

    _plainOpen() {
      this.resumable = false;
      this._token = null;
      this.id = null;
      this._startSession(this._opened ? "reconnected without a session (the server does not offer them)" : null);
    }

    _up(resumed) {
      this._attempt = 0;
      this._offlineSeen = false;
      this._setStatus("open", { resumed: !!resumed });
      for (const entry of this._outbox.slice()) {
        if (this.status !== "open") break;
        this._write(entry);
      }
    }

    _write(entry) {
      try {
        this._ws.send(entry.data);
      } catch (err) {
        return; // the socket is closing: the message stays queued
      }
      entry.written = true;
      if (!this._token) this._drop(entry); // plain mode: nothing to re-send later
    }

    // After a resume that says the server has read M messages: forget those, re-send the rest.
    _rewind(m) {
      if (!Number.isInteger(m) || m < 0 || m > this._seq) return false;
      while (this._outbox.length && this._outbox[0].seq <= m) this._shift();
      const next = this._outbox.length ? this._outbox[0].seq : this._seq + 1;
      if (next !== m + 1) return false; // messages m+1 .. next-1 were trimmed: lost
      for (const entry of this._outbox) entry.written = false;
      return true;
    }

    // A new session: unsent messages go to it, numbered from 1; the ones written to the old session
    // (maybe received, maybe not) are handed to the app in onreset.
    _renumber() {
      const unconfirmed = [];
      const keep = [];
      for (const entry of this._outbox) (entry.written ? unconfirmed : keep).push(entry);
      this._outbox = keep;
      this._outboxBytes = keep.reduce((n, e) => n + e.size, 0);
      this._seq = 0;
      for (const entry of keep) entry.seq = ++this._seq;
      return unconfirmed.map((e) => e.data);
    }

    _shift() {
      this._outboxBytes -= this._outbox.shift().size;
    }

    _drop(entry) {
      const i = this._outbox.indexOf(entry);
      if (i >= 0) {
        this._outbox.splice(i, 1);
        this._outboxBytes -= entry.size;
      }
    }

    // -- losing a socket -------------------------------------------------------

    _socketClosed(ws, e, hello) {
      if (!this._opened && !hello && this._offerSession && !(this.options.protocols || []).length) {
        // A server that knows nothing of sessions (an older ws2http, another server) selects no
        // subprotocol, and the browser fails the handshake: try once more without (plain mode from then
        // on). ws2http selects ws2http.plain where it offers no session, so this is for those only.
        this._offerSession = false;
        this._ws = null;
        this._connect();
        return;
      }
      if (!this._opened && !hello) {
        // The very first handshake failed (refused, no server): as a plain WebSocket would report it.
        this._closed = true;
        this._cleanup();
        this._final(e.code, e.reason, e.wasClean);
        return;
      }
      if (e.code === EXPIRED || e.code === BAD_RESUME) {
        this._ws = null;
        this._newSession("the server refused the resume: " + e.code + " " + (e.reason || "")); // start over now
        return;
      }
      if (e.code === 1006 || e.code === 1005 || !hello || this.options.reconnectCodes.indexOf(e.code) >= 0) {
        if (e.code !== 1006 && e.code !== 1005 && hello && this._token === null) {
          // Plain mode: the next connection is a new one. With a token, the resume decides (4410: start over).
          this._resetReason = "the server closed the session: " + e.code + " " + (e.reason || "");
        }
        this._lost(ws, e.code, e.reason);
        return;
      }
      this._closed = true; // the server closed the session for good
      this._cleanup();
      this._final(e.code, e.reason, e.wasClean);
    }

    // The socket is gone or given up: reconnect (resume when there is a token) after a backoff.
    _lost(ws, code, reason) {
      if (this._ws === ws) this._ws = null;
      this._abandon(ws);
      if (this._attempt >= this.options.maxRetries) {
        this._closed = true;
        this._cleanup();
        this._final(code, reason, false);
        return;
      }
      this._schedule(this._backoff());
    }

    _schedule(delay) {
      this._setStatus(this._opened ? "reconnecting" : "connecting", { delay });
      clearTimeout(this._timer);
      this._timer = setTimeout(() => this._connect(), delay);
    }

    // Exponential backoff with "equal jitter": half fixed, half random, so a mass disconnect spreads.
    _backoff() {
      const o = this.options;
      const base = Math.min(o.maxDelay, o.minDelay * Math.pow(2, this._attempt));
      this._attempt += 1;
      return Math.round(base / 2 + Math.random() * base / 2);
    }

    // A connecting socket is failed (no frame). An open one of a live session is closed with
    // RESUMING, which the server treats as a drop (any other close frame would end the session):
    // left open, the browser would go on answering the server's pings, acknowledging messages
    // this side never delivered, and the resume would find them gone.
    _abandon(ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = null;
      if (ws.readyState === 0) {
        try { ws.close(); } catch (err) { /* already failing */ }
      } else if (ws.readyState === 1) {
        ws.close(this._token ? RESUMING : 1000, this._token ? "resuming" : "reconnecting");
      }
    }

    // The network came back: retry now; a socket that was open across an offline spell may be dead
    // without knowing it, so a session resumes on a new one (the server drops the old).
    _networkBack() {
      if (this._closed) return;
      if (this.status === "open" && this._offlineSeen && this._token !== null) {
        const ws = this._ws;
        this._ws = null;
        this._abandon(ws);
        this._attempt = 0;
        this._schedule(0);
      } else if (this.status === "reconnecting" || this.status === "connecting") {
        if (this._timer !== null) {
          this._attempt = 0;
          this._schedule(0);
        }
      }
      this._offlineSeen = false;
    }

    _newSession(why) {
      this._token = null;
      this._resetReason = why;
      this._schedule(0);
    }

    // -- reporting -------------------------------------------------------------

    // onstatus gets {type, status} plus, for "reconnecting", the delay (ms) before the next attempt,
    // and for "open", whether the session was resumed (false: a first or a new session).
    _setStatus(status, extra) {
      if (this.status === status) return;
      this.status = status;
      if (this.onstatus) this.onstatus(Object.assign({ type: "status", status }, extra || {}));
    }

    _cleanup() {
      clearTimeout(this._timer);
      this._timer = null;
      if (root.removeEventListener) {
        root.removeEventListener("online", this._onOnline);
        root.removeEventListener("offline", this._onOffline);
      }
    }

    _final(code, reason, wasClean) {
      this._setStatus("closed");
      if (this.onclose) this.onclose({ type: "close", code, reason: reason || "", wasClean: !!wasClean });
    }
  }

  Ws2httpSocket.SESSION_PROTOCOL = SESSION;
  root.Ws2httpSocket = Ws2httpSocket;
  if (typeof module === "object" && module.exports) module.exports = Ws2httpSocket;
})(typeof self !== "undefined" ? self : this);
