// The page: sign-in, the chat list (kept live by /chats/watch), one chat
// (history, live reply, composer, queue) and the settings.

import { Api, idempotencyKey } from './api.js';
import { Conversation } from './conversation.js';
import { el, formatTime, renderDraft, renderMessage, statusBadge } from './render.js';
import { LiveStream } from './stream.js';

const $ = (id) => document.getElementById(id);

/** Messages per history page; chats per list page. */
const MESSAGE_PAGE = 50;
const CHAT_PAGE = 30;
/** Scrolled this close to the top, older messages load; this close to the bottom, new ones follow. */
const NEAR_TOP_PX = 150;
const NEAR_BOTTOM_PX = 80;

const KEYS = { token: 'chatd.token', replicas: 'chatd.replicas', transport: 'chatd.transport', busy: 'chatd.busy' };

/** Everything the signed-in page holds. */
const state = {
  api: null,
  watch: null,
  /** The chat list: chats by id, newest first in `order`. */
  list: { chats: new Map(), order: [], nextCursor: null, pages: 0, archived: false, loading: false },
  /** The open chat, or null for a new one. */
  current: null,
  /** Each stream's connection state, for the indicator. */
  connections: new Map(),
};

// ---------------------------------------------------------------- sign-in

/**
 * `#token=…` (the link `chatd dev` prints) signs in; `&replicas=URL,URL`
 * names the other replicas. The fragment never reaches a server, and is
 * removed from the address bar (and history) at once.
 */
function readSignInLink() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
  if (!token) return;
  localStorage.setItem(KEYS.token, token.trim());
  const replicas = params.get('replicas');
  if (replicas) localStorage.setItem(KEYS.replicas, replicas.split(',').join('\n'));
  history.replaceState(null, '', location.pathname + location.search);
}

function configuredReplicas() {
  return (localStorage.getItem(KEYS.replicas) ?? '')
    .split(/\s+/)
    .map((url) => url.trim())
    .filter((url) => /^https?:\/\//.test(url));
}

function transportSetting() {
  return localStorage.getItem(KEYS.transport) ?? 'auto';
}

function showSignIn(message = '') {
  $('app').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message;
  $('signin-token').focus();
}

function makeApi(token) {
  return new Api({
    token,
    bases: [location.origin, ...configuredReplicas()],
    onChange: () => showConnection(),
    onUnauthorized: () => signOut('The token was refused. Sign in again.'),
  });
}

async function submitSignIn(event) {
  event.preventDefault();
  const token = $('signin-token').value.trim();
  if (!token) return;
  try {
    await makeApi(token).request('GET', '/users/me');
  } catch (error) {
    $('signin-error').textContent = error.status === 401 ? 'That token is not valid.' : error.message;
    return;
  }
  localStorage.setItem(KEYS.token, token);
  $('signin-token').value = '';
  start(token);
}

function signOut(message = '') {
  localStorage.removeItem(KEYS.token);
  closeChat();
  state.watch?.stop();
  state.watch = null;
  state.api = null;
  state.list.chats.clear();
  state.list.order = [];
  state.list.pages = 0;
  state.list.nextCursor = null;
  if ($('settings').open) $('settings').close();
  showSignIn(message);
}

function start(token) {
  state.api = makeApi(token);
  $('signin').hidden = true;
  $('app').hidden = false;
  state.api
    .request('GET', '/users/me')
    .then((user) => {
      $('settings-user').textContent = `Signed in as ${user.username} (${user.role}).`;
    })
    .catch(() => {});
  startWatch();
  loadChats();
  route();
}

// ---------------------------------------------------------- connection

function setConnection(name, info) {
  state.connections.set(name, info);
  showConnection();
}

function showConnection() {
  const node = $('connection');
  const states = [...state.connections.values()];
  const live = states.length > 0 && states.every((info) => info.state === 'live');
  const base = state.api?.base ?? location.origin;
  node.className = `connection ${live ? 'live' : 'down'}`;
  node.textContent = live ? new URL(base).host : 'reconnecting…';
  node.title = live ? `Live via ${base}` : `Reconnecting (replica: ${base})`;
}

// ------------------------------------------------------------ chat list

function startWatch() {
  state.watch?.stop();
  state.watch = new LiveStream(state.api, {
    path: '/chats/watch',
    transport: transportSetting(),
    onEvent: watchEvent,
    // Anything may have changed while the watch was down.
    onOpen: () => loadChats(),
    onState: (info) => setConnection('watch', info),
    onFatal: (error) => showNotice(`The chat list stopped: ${error.message}`),
  }).start();
}

function watchEvent(event) {
  if (event.type === 'chat') {
    upsertChat(event.chat);
    if (state.current?.id === event.chat.id) updateChat(event.chat);
  } else if (event.type === 'deleted') {
    removeChat(event.chat_id);
    if (state.current?.id === event.chat_id) {
      closeChat();
      showNotice('The chat was deleted.');
    }
  } else if (event.type === 'refresh') {
    loadChats();
  }
}

/**
 * Loads the first page of the list, merged into what is shown, or the next
 * page (`more`).
 */
async function loadChats({ more = false } = {}) {
  const list = state.list;
  if (more && (!list.nextCursor || list.loading)) return;
  const archived = list.archived;
  list.loading = true;
  let page;
  try {
    page = await state.api.request('GET', '/chats', {
      query: { limit: CHAT_PAGE, archived, cursor: more ? list.nextCursor : undefined },
    });
  } catch (error) {
    showNotice(`The chat list could not be read: ${error.message}`);
    return;
  } finally {
    list.loading = false;
  }
  if (archived !== list.archived || !state.api) return;
  if (more) {
    list.pages += 1;
    list.nextCursor = page.next_cursor;
  } else {
    // Chats in the page's range that it lacks were deleted meanwhile.
    const oldest = page.chats.length ? page.chats[page.chats.length - 1].id : null;
    const fresh = new Set(page.chats.map((chat) => chat.id));
    for (const id of [...list.order]) {
      const inRange = !page.next_cursor || (oldest !== null && id >= oldest);
      if (inRange && !fresh.has(id)) removeChat(id, { render: false });
    }
    // Pages further down stay loaded, and so does their cursor.
    if (list.pages <= 1) list.nextCursor = page.next_cursor;
    list.pages = Math.max(list.pages, 1);
  }
  for (const chat of page.chats) upsertChat(chat, { render: false, force: true });
  renderChatList();
}

/**
 * Puts `chat` into the list at its place (newest first: ids are UUIDv7,
 * which sort by creation time), or takes it out when it does not belong
 * under the current filter. A chat older than every loaded one waits for
 * its page.
 */
function upsertChat(chat, { render = true, force = false } = {}) {
  const list = state.list;
  if (chat.archived !== list.archived) {
    removeChat(chat.id, { render });
    return;
  }
  const known = list.chats.has(chat.id);
  const oldest = list.order[list.order.length - 1];
  if (!known && !force && list.nextCursor && oldest && chat.id < oldest) return;
  list.chats.set(chat.id, chat);
  if (!known) {
    const at = list.order.findIndex((id) => id < chat.id);
    list.order.splice(at < 0 ? list.order.length : at, 0, chat.id);
  }
  if (render) renderChatList();
}

function removeChat(id, { render = true } = {}) {
  const list = state.list;
  if (!list.chats.delete(id)) return;
  list.order = list.order.filter((other) => other !== id);
  if (render) renderChatList();
}

function chatLabel(chat) {
  return chat.title || `Untitled chat · ${formatTime(chat.created_at)}`;
}

function renderChatList() {
  const list = state.list;
  const items = list.order.map((id) => {
    const chat = list.chats.get(id);
    const item = el('li');
    const button = el('button', 'chat-item');
    button.type = 'button';
    button.dataset.chatId = chat.id;
    if (state.current?.id === chat.id) button.setAttribute('aria-current', 'true');
    const title = el('span', 'chat-item-title', chatLabel(chat));
    const meta = el('span', 'chat-item-meta');
    meta.append(statusBadge(chat.status), el('span', 'time', formatTime(chat.updated_at)));
    button.append(title, meta);
    button.addEventListener('click', () => navigate(chat.id));
    item.append(button);
    return item;
  });
  $('chat-list').replaceChildren(...items);
  $('chat-list-empty').hidden = items.length > 0;
  $('chat-list-empty').textContent = list.archived ? 'No archived chats.' : 'No chats yet.';
  $('more-chats').hidden = !list.nextCursor;
}

function setFilter(archived) {
  const list = state.list;
  if (list.archived === archived) return;
  list.archived = archived;
  list.chats.clear();
  list.order = [];
  list.nextCursor = null;
  list.pages = 0;
  $('filter-active').setAttribute('aria-selected', String(!archived));
  $('filter-archived').setAttribute('aria-selected', String(archived));
  renderChatList();
  loadChats();
}

// ---------------------------------------------------------------- routing

function navigate(id) {
  location.hash = id ? `chat=${id}` : '';
}

function route() {
  if (!state.api) return;
  const id = new URLSearchParams(location.hash.slice(1)).get('chat');
  if (!id) {
    if (state.current) closeChat();
    return;
  }
  if (state.current?.id !== id) openChat(id);
  showView('chat');
}

function showView(view) {
  $('app').classList.toggle('view-chat', view === 'chat');
  $('app').classList.toggle('view-list', view !== 'chat');
}

// ------------------------------------------------------------------- chat

function closeChat() {
  state.current?.stream?.stop();
  state.connections.delete('chat');
  state.current = null;
  $('message-list').replaceChildren();
  $('draft-list').replaceChildren();
  $('queue').hidden = true;
  $('older').hidden = true;
  $('empty-chat').hidden = false;
  $('chat-title').textContent = 'New chat';
  $('chat-status').replaceChildren();
  $('chat-actions').hidden = true;
  $('last-error').hidden = true;
  $('interrupt').hidden = true;
  hideNotice();
  showConnection();
  if (state.api) renderChatList();
}

async function openChat(id) {
  closeChat();
  const conversation = new Conversation(id);
  const current = {
    id,
    conversation,
    chat: state.list.chats.get(id) ?? null,
    stream: null,
    rendered: new Map(),
    draftFrame: 0,
    loadingOlder: false,
  };
  state.current = current;
  renderChatList();
  if (current.chat) updateChat(current.chat);
  let chat;
  let page;
  try {
    [chat, page] = await Promise.all([
      state.api.request('GET', `/chats/${id}`),
      state.api.request('GET', `/chats/${id}/messages`, { query: { limit: MESSAGE_PAGE } }),
    ]);
  } catch (error) {
    if (state.current !== current) return;
    showNotice(error.status === 404 ? 'No such chat.' : `The chat could not be read: ${error.message}`);
    return;
  }
  if (state.current !== current) return;
  conversation.addPage(page);
  conversation.apply({ type: 'status', status: chat.status, generation: chat.generation });
  updateChat(chat);
  renderMessages();
  scrollToBottom();
  current.stream = new LiveStream(state.api, {
    path: `/chats/${id}/stream`,
    query: () => conversation.query(),
    transport: transportSetting(),
    onEvent: (event) => chatEvent(current, event),
    onState: (info) => setConnection('chat', info),
    onFatal: (error) => showNotice(error.status === 404 ? 'The chat is gone.' : `The stream stopped: ${error.message}`),
  }).start();
}

/** Shows the chat row's fields: title, status, archive state, last error. */
function updateChat(chat) {
  const current = state.current;
  if (!current) return;
  current.chat = chat;
  $('chat-title').textContent = chatLabel(chat);
  $('chat-actions').hidden = false;
  $('archive').textContent = chat.archived ? 'Restore' : 'Archive';
  if (current.conversation.status === null || chat.generation > current.conversation.generation) {
    current.conversation.apply({ type: 'status', status: chat.status, generation: chat.generation });
  }
  renderStatus();
}

function chatEvent(current, event) {
  if (state.current !== current) return;
  const messages = $('messages');
  const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < NEAR_BOTTOM_PX;
  const changed = current.conversation.apply(event);
  if (changed.has('messages')) renderMessages();
  if (changed.has('drafts')) scheduleDrafts(current, atBottom);
  if (changed.has('status')) {
    renderStatus();
    if (current.conversation.status === 'error') refreshChatRow(current);
  }
  if (changed.has('queue')) renderQueue();
  if (changed.has('notice')) {
    renderNotice();
    renderStatus();
  }
  if (changed.has('title') && current.chat) updateChat({ ...current.chat, title: event.title });
  if (changed.has('refresh')) reloadHistory(current);
  if (atBottom) scrollToBottom();
}

/** Reads the chat row again (a status event does not carry `last_error`). */
async function refreshChatRow(current) {
  try {
    const chat = await state.api.request('GET', `/chats/${current.id}`);
    if (state.current === current) updateChat(chat);
  } catch {
    // The watch brings the row too.
  }
}

/**
 * True while a turn is under way: queued, running, or waiting on something
 * outside the chat (its client's tool results, its subagents). Each can be
 * interrupted.
 */
function isBusy(status) {
  return ['pending', 'running', 'requires_action', 'waiting_on_agents'].includes(status);
}

/** What a waiting chat waits for, said in the status line. */
const WAITS_ON = {
  requires_action: 'Waiting for the results of tools its client runs (POST …/tool-results).',
  waiting_on_agents: 'Waiting for its subagents to finish.',
};

function renderStatus() {
  const current = state.current;
  const status = current.conversation.status;
  $('chat-status').replaceChildren(statusBadge(status));
  const busy = isBusy(status);
  $('interrupt').hidden = !busy;
  // The failed turn's error event (fresh), else the row's last_error.
  const lastError = status === 'error' ? (current.conversation.error?.message ?? current.chat?.last_error) : null;
  $('last-error').hidden = !lastError;
  $('last-error').textContent = lastError ? `The last turn failed: ${lastError}` : '';
  $('waits-on').hidden = !WAITS_ON[status];
  $('waits-on').textContent = WAITS_ON[status] ?? '';
  const listed = state.list.chats.get(current.id);
  if (listed && listed.status !== status) {
    listed.status = status;
    renderChatList();
  }
}

/** Inserts messages not shown yet at their place; drops ones no longer known. */
function renderMessages() {
  const current = state.current;
  const list = $('message-list');
  const ordered = current.conversation.orderedMessages();
  const known = new Set(ordered.map((message) => message.id));
  for (const [id, node] of current.rendered) {
    if (!known.has(id)) {
      node.remove();
      current.rendered.delete(id);
    }
  }
  let next = null;
  for (let i = ordered.length - 1; i >= 0; i--) {
    const message = ordered[i];
    let node = current.rendered.get(message.id);
    if (!node) {
      node = renderMessage(message, { onEdit: editMessage });
      current.rendered.set(message.id, node);
      list.insertBefore(node, next);
    }
    next = node;
  }
  $('older').hidden = !current.conversation.hasMore;
  $('empty-chat').hidden = ordered.length > 0 || current.conversation.drafts.size > 0;
}

/** Drafts are redrawn at most once a frame, however fast parts come. */
function scheduleDrafts(current, atBottom) {
  current.stickToBottom = current.stickToBottom || atBottom;
  if (current.draftFrame) return;
  current.draftFrame = requestAnimationFrame(() => {
    current.draftFrame = 0;
    if (state.current !== current) return;
    const list = $('draft-list');
    const previous = new Map([...list.children].map((node) => [`${node.dataset.generation}:${node.dataset.step}`, node]));
    const drafts = current.conversation.orderedDrafts();
    list.replaceChildren(...drafts.map((draft) => renderDraft(draft, previous.get(`${draft.generation}:${draft.step}`))));
    $('empty-chat').hidden = current.conversation.messages.size > 0 || drafts.length > 0;
    if (current.stickToBottom) scrollToBottom();
    current.stickToBottom = false;
  });
}

function renderQueue() {
  const current = state.current;
  const queue = current.conversation.queue;
  $('queue').hidden = queue.length === 0;
  $('queue-list').replaceChildren(
    ...queue.map((queued) => {
      const item = el('li');
      item.dataset.queuedId = String(queued.id);
      const text = queued.content.map((part) => part.text ?? `[${part.type}]`).join(' ');
      const promote = el('button', 'link-button', 'Send now');
      promote.type = 'button';
      promote.title = 'Interrupt the reply and run this message next';
      promote.addEventListener('click', () => act(() => state.api.request('POST', `/chats/${current.id}/queue/${queued.id}/promote`, { retry: true })));
      const remove = el('button', 'link-button danger', 'Delete');
      remove.type = 'button';
      remove.addEventListener('click', () => act(() => state.api.request('DELETE', `/chats/${current.id}/queue/${queued.id}`)));
      item.append(el('span', 'queued-text', text), promote, remove);
      return item;
    }),
  );
}

function renderNotice() {
  const conversation = state.current.conversation;
  if (conversation.retry) {
    const retry = conversation.retry;
    showNotice(`The model call failed (${retry.error}); retrying in ${(retry.delay_ms / 1000).toFixed(1)} s (attempt ${retry.attempt}).`, 'retry');
  } else if (conversation.error && conversation.status !== 'error') {
    // (A failed turn's error shows as the chat's last error instead.)
    showNotice(`Error: ${conversation.error.message}`, 'error');
  } else {
    hideNotice();
  }
}

function showNotice(text, kind = 'info') {
  $('notice').textContent = text;
  $('notice').dataset.kind = kind;
  $('notice').hidden = false;
}

function hideNotice() {
  $('notice').hidden = true;
  $('notice').textContent = '';
}

function scrollToBottom() {
  const messages = $('messages');
  messages.scrollTop = messages.scrollHeight;
}

async function loadOlder() {
  const current = state.current;
  if (!current || current.loadingOlder || !current.conversation.hasMore) return;
  current.loadingOlder = true;
  try {
    const page = await state.api.request('GET', `/chats/${current.id}/messages`, {
      query: { limit: MESSAGE_PAGE, before_id: current.conversation.oldestId() },
    });
    if (state.current !== current) return;
    const messages = $('messages');
    const before = messages.scrollHeight;
    current.conversation.addPage(page);
    renderMessages();
    // Keep what the reader was looking at in place.
    messages.scrollTop += messages.scrollHeight - before;
  } catch (error) {
    showNotice(`Older messages could not be read: ${error.message}`);
  } finally {
    current.loadingOlder = false;
  }
}

/** History was rewritten (an edit): read the newest page again. */
async function reloadHistory(current) {
  try {
    const page = await state.api.request('GET', `/chats/${current.id}/messages`, { query: { limit: MESSAGE_PAGE } });
    if (state.current !== current) return;
    current.conversation.resetHistory(page);
    renderMessages();
    scrollToBottom();
  } catch (error) {
    showNotice(`The chat could not be read again: ${error.message}`);
  }
}

function editMessage(message, node) {
  const current = state.current;
  if (!current || node.querySelector('form')) return;
  const form = el('form', 'edit-form');
  const input = el('textarea');
  input.value = message.content.filter((part) => part.type === 'text').map((part) => part.text).join('\n');
  input.setAttribute('aria-label', 'Edited message');
  const save = el('button', 'primary', 'Save and run again');
  save.type = 'submit';
  const cancel = el('button', null, 'Cancel');
  cancel.type = 'button';
  form.append(input, save, cancel);
  const body = node.querySelector('.message-body');
  body.hidden = true;
  node.append(form);
  input.focus();
  const close = () => {
    form.remove();
    body.hidden = false;
  };
  cancel.addEventListener('click', close);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    const done = await act(() => state.api.request('PATCH', `/chats/${current.id}/messages/${message.id}`, { body: { text } }));
    if (done) {
      close();
      reloadHistory(current);
    }
  });
}

/** Runs an action; shows its failure. Resolves to true when it worked. */
async function act(action) {
  try {
    await action();
    return true;
  } catch (error) {
    showNotice(error.message, 'error');
    return false;
  }
}

// --------------------------------------------------------------- composer

/** One key per text being sent: a retried send can never post twice. */
let sendKey = null;

async function send(event) {
  event?.preventDefault();
  const input = $('composer-input');
  const text = input.value;
  if (!text.trim() || $('send').disabled) return;
  sendKey ??= idempotencyKey();
  $('send').disabled = true;
  const current = state.current;
  try {
    if (!current) {
      const chat = await state.api.request('POST', '/chats', { body: { text }, idempotencyKey: sendKey });
      input.value = '';
      sendKey = null;
      upsertChat(chat);
      navigate(chat.id);
    } else {
      const busyBehavior = $('busy-behavior').value;
      const result = await state.api.request('POST', `/chats/${current.id}/messages`, {
        body: { text, busy_behavior: busyBehavior },
        idempotencyKey: sendKey,
      });
      input.value = '';
      sendKey = null;
      if (result.message && state.current === current) {
        current.conversation.addMessage(result.message);
        renderMessages();
        scrollToBottom();
      } else if (result.queued) {
        showNotice('The chat is busy: your message is queued.');
      }
    }
  } catch (error) {
    showNotice(error.code === 'chat_busy' ? 'The chat is busy: the message was not sent.' : error.message, 'error');
  } finally {
    $('send').disabled = false;
  }
}

function interrupt() {
  const current = state.current;
  if (!current) return;
  act(() => state.api.request('POST', `/chats/${current.id}/interrupt`, { retry: true }));
}

// ---------------------------------------------------------------- settings

function openSettings() {
  $('settings-replicas').value = configuredReplicas().join('\n');
  $('settings-transport').value = transportSetting();
  $('settings').showModal();
}

function saveSettings(event) {
  event.preventDefault();
  if (event.submitter?.value === 'save') {
    localStorage.setItem(KEYS.replicas, $('settings-replicas').value.trim());
    localStorage.setItem(KEYS.transport, $('settings-transport').value);
    const token = state.api.token;
    const open = state.current?.id;
    closeChat();
    state.watch?.stop();
    state.connections.clear();
    state.api = makeApi(token);
    startWatch();
    loadChats();
    if (open) openChat(open);
  }
  $('settings').close();
}

// ------------------------------------------------------------ chat actions

/** Changes the open chat's row (title, archived) and shows the result. */
async function patchChat(body) {
  const current = state.current;
  if (!current) return false;
  let chat;
  const done = await act(async () => {
    chat = await state.api.request('PATCH', `/chats/${current.id}`, { body });
  });
  if (done && state.current === current) {
    updateChat(chat);
    upsertChat(chat);
  }
  return done;
}

function showRename(shown) {
  $('rename-form').hidden = !shown;
  $('chat-title').hidden = shown;
  if (shown) {
    $('rename-input').value = state.current?.chat?.title ?? '';
    $('rename-input').focus();
  }
}

async function deleteChat() {
  $('delete-confirm').hidden = true;
  const current = state.current;
  if (!current) return;
  if (await act(() => state.api.request('DELETE', `/chats/${current.id}`))) {
    removeChat(current.id);
    navigate(null);
    closeChat();
    showView('list');
  }
}

// ------------------------------------------------------------------- wiring

function wireComposer() {
  $('composer').addEventListener('submit', send);
  $('composer-input').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) send(event);
  });
  $('composer-input').addEventListener('input', () => {
    sendKey = null;
  });
  $('busy-behavior').value = localStorage.getItem(KEYS.busy) ?? 'queue';
  $('busy-behavior').addEventListener('change', () => localStorage.setItem(KEYS.busy, $('busy-behavior').value));
  $('interrupt').addEventListener('click', interrupt);
  document.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape' || $('settings').open || !state.current) return;
    const status = state.current.conversation.status;
    if (isBusy(status)) {
      event.preventDefault();
      interrupt();
    }
  });
}

function wireNavigation() {
  $('new-chat').addEventListener('click', () => {
    navigate(null);
    closeChat();
    showView('chat');
    $('composer-input').focus();
  });
  $('back').addEventListener('click', () => {
    navigate(null);
    showView('list');
  });
  $('filter-active').addEventListener('click', () => setFilter(false));
  $('filter-archived').addEventListener('click', () => setFilter(true));
  $('more-chats').addEventListener('click', () => loadChats({ more: true }));
  new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting)) loadChats({ more: true });
  }).observe($('more-chats'));
  $('older').addEventListener('click', loadOlder);
  $('messages').addEventListener('scroll', () => {
    if ($('messages').scrollTop < NEAR_TOP_PX) loadOlder();
  });
  window.addEventListener('hashchange', route);
  window.addEventListener('online', () => {
    state.watch?.kick();
    state.current?.stream?.kick();
  });
}

function wireChatActions() {
  $('rename').addEventListener('click', () => showRename(true));
  $('rename-cancel').addEventListener('click', () => showRename(false));
  $('rename-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    if (await patchChat({ title: $('rename-input').value.trim() })) showRename(false);
  });
  $('archive').addEventListener('click', () => {
    if (state.current?.chat) patchChat({ archived: !state.current.chat.archived });
  });
  $('delete').addEventListener('click', () => {
    $('delete-confirm').hidden = false;
    $('delete-yes').focus();
  });
  $('delete-no').addEventListener('click', () => {
    $('delete-confirm').hidden = true;
  });
  $('delete-yes').addEventListener('click', deleteChat);
}

function wire() {
  $('signin-form').addEventListener('submit', submitSignIn);
  $('settings-button').addEventListener('click', openSettings);
  $('settings-form').addEventListener('submit', saveSettings);
  $('sign-out').addEventListener('click', () => signOut());
  wireComposer();
  wireNavigation();
  wireChatActions();
}

wire();
readSignInLink();
const token = localStorage.getItem(KEYS.token);
if (token) start(token);
else showSignIn();
