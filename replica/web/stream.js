// A stream that stays up (DESIGN §6, §18): a WebSocket, or server-sent
// events read with fetch when WebSockets do not get through. On every
// (re)connection it asks `query()` for the cursor, so the server sends only
// what the page has not seen. It reconnects with backoff after a drop, and
// moves to the next replica when one cannot be reached or says it is going
// away (`reconnect` with `replica_shutting_down`).
//
// Browsers cannot put an Authorization header on a WebSocket: the token is
// offered as the subprotocol `chatd.bearer.<token>` beside `chatd`, which
// the server picks. (Never in the URL, where proxies and logs keep it.)

import { errorOf } from './api.js';

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5000;
/** A connection that lived this long was good: the backoff starts over. */
const HEALTHY_MS = 3000;
/** A WebSocket that has not opened by then is given up. */
const OPEN_TIMEOUT_MS = 10000;
/** SSE sends a comment every 15 s: this much silence means a dead link. */
const SSE_SILENCE_MS = 45000;

export class LiveStream {
  /**
   * `api`: where and as whom. `path`: the stream's API path. `query()`: the
   * cursor for the next connection. `onEvent(event)`: every event.
   * `onOpen()`: a connection is up (the server has subscribed).
   * `onState({state, base, transport})`: 'connecting' | 'live' | 'retrying'.
   * `onFatal(error)`: the stream cannot go on (401, 404): it has stopped.
   * `transport`: 'auto' | 'websocket' | 'sse'.
   */
  constructor(api, { path, query = () => ({}), onEvent, onOpen = () => {}, onState = () => {}, onFatal = () => {}, transport = 'auto' }) {
    this.api = api;
    this.path = path;
    this.query = query;
    this.onEvent = onEvent;
    this.onOpen = onOpen;
    this.onState = onState;
    this.onFatal = onFatal;
    this.transport = transport;
    /** Replicas where WebSockets failed and SSE worked. */
    this.sseBases = new Set();
    this.stopped = false;
    this.closeCurrent = () => {};
    this.wake = () => {};
  }

  start() {
    this.run();
    return this;
  }

  /** Closes the connection for good. */
  stop() {
    this.stopped = true;
    this.closeCurrent();
    this.wake();
  }

  /** Reconnects now (the network came back). */
  kick() {
    this.closeCurrent();
    this.wake();
  }

  async run() {
    let backoff = BACKOFF_MIN_MS;
    while (!this.stopped) {
      const base = this.api.base;
      const started = performance.now();
      const outcome = await this.attempt(base);
      if (this.stopped) return;
      if (outcome.fatal) {
        this.stopped = true;
        this.onFatal(outcome.fatal);
        return;
      }
      const lived = outcome.opened ? performance.now() - started : 0;
      if (outcome.moveOn || !outcome.opened) this.api.failover(base);
      if (lived >= HEALTHY_MS) backoff = BACKOFF_MIN_MS;
      // A replica going away hands its streams over at once; anything
      // else waits, longer each time.
      const delay = outcome.moveOn ? 0 : jitter(backoff);
      if (!outcome.moveOn) backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      this.onState({ state: 'retrying', base: this.api.base, delay });
      await this.pause(delay);
    }
  }

  async attempt(base) {
    const useSse = this.transport === 'sse' || (this.transport === 'auto' && this.sseBases.has(base));
    if (useSse) return this.sse(base);
    const outcome = await this.websocket(base);
    if (outcome.opened || outcome.moveOn || this.transport !== 'auto' || this.stopped) return outcome;
    // The WebSocket did not open: is it WebSockets or the replica? SSE says.
    const sse = await this.sse(base);
    if (sse.opened) this.sseBases.add(base);
    return sse;
  }

  pause(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  deliver(event, outcome) {
    if (event.type === 'reconnect') outcome.moveOn = event.reason === 'replica_shutting_down';
    this.onEvent(event);
  }

  opened(base, transport, outcome) {
    outcome.opened = true;
    this.onState({ state: 'live', base, transport });
    this.onOpen();
  }

  websocket(base) {
    const outcome = { opened: false, moveOn: false };
    this.onState({ state: 'connecting', base, transport: 'websocket' });
    return new Promise((resolve) => {
      const url = this.api.url(base, this.path, this.query());
      url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
      let socket;
      try {
        socket = new WebSocket(url, ['chatd', `chatd.bearer.${this.api.token}`]);
      } catch {
        resolve(outcome);
        return;
      }
      const timeout = setTimeout(() => socket.close(), OPEN_TIMEOUT_MS);
      this.closeCurrent = () => socket.close();
      socket.onopen = () => {
        clearTimeout(timeout);
        this.opened(base, 'websocket', outcome);
      };
      socket.onmessage = (message) => {
        let event;
        try {
          event = JSON.parse(message.data);
        } catch {
          return;
        }
        this.deliver(event, outcome);
      };
      socket.onclose = () => {
        clearTimeout(timeout);
        resolve(outcome);
      };
    });
  }

  async sse(base) {
    const outcome = { opened: false, moveOn: false };
    this.onState({ state: 'connecting', base, transport: 'sse' });
    const controller = new AbortController();
    this.closeCurrent = () => controller.abort();
    if (this.stopped) return outcome;
    let response;
    try {
      response = await fetch(this.api.url(base, this.path, this.query()), {
        headers: { Authorization: `Bearer ${this.api.token}`, Accept: 'text/event-stream' },
        signal: controller.signal,
        cache: 'no-store',
      });
    } catch {
      return outcome;
    }
    if (!response.ok) {
      const error = await errorOf(response);
      if (response.status === 401) this.api.onUnauthorized(error);
      if ([401, 403, 404].includes(response.status)) outcome.fatal = error;
      outcome.moveOn = response.status === 503;
      return outcome;
    }
    this.opened(base, 'sse', outcome);
    let silence = setTimeout(() => controller.abort(), SSE_SILENCE_MS);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let data = [];
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        clearTimeout(silence);
        silence = setTimeout(() => controller.abort(), SSE_SILENCE_MS);
        buffer += value;
        let newline;
        while ((newline = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, newline).replace(/\r$/, '');
          buffer = buffer.slice(newline + 1);
          if (line === '') {
            if (data.length) this.dispatchSse(data.join('\n'), outcome);
            data = [];
          } else if (line.startsWith('data:')) {
            data.push(line.slice(5).replace(/^ /, ''));
          }
          // `event:` repeats the JSON's type, `id:` the cursor the page
          // keeps itself, and `:` lines are keep-alives.
        }
      }
    } catch {
      // Aborted or cut: the caller reconnects.
    } finally {
      clearTimeout(silence);
    }
    return outcome;
  }

  dispatchSse(text, outcome) {
    let event;
    try {
      event = JSON.parse(text);
    } catch {
      return;
    }
    this.deliver(event, outcome);
  }
}

function jitter(ms) {
  return Math.round(ms * (0.75 + Math.random() * 0.5));
}
