// Messages, drafts and parts as DOM. Text goes through the safe Markdown
// renderer or into text nodes; nothing is parsed as HTML.

import { renderMarkdown } from './markdown.js';

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The badge of a chat status; statuses this page does not know are shown as they are. */
export function statusBadge(status) {
  const known = ['pending', 'running', 'waiting', 'error', 'requires_action', 'waiting_on_agents'];
  const badge = el('span', `badge status-${known.includes(status) ? status : 'other'}`, (status ?? '…').replaceAll('_', ' '));
  badge.dataset.status = status ?? '';
  badge.title = `status: ${status}`;
  return badge;
}

const ROLE_LABEL = { user: 'You', assistant: 'Assistant', tool: 'Tool', system: 'System' };

/**
 * A committed message. `onEdit(message)` adds an edit button to user
 * messages.
 */
export function renderMessage(message, { onEdit } = {}) {
  const node = el('article', `message role-${message.role}`);
  node.dataset.messageId = String(message.id);
  const header = el('header', 'message-header');
  header.append(el('span', 'role', ROLE_LABEL[message.role] ?? message.role));
  const time = el('time', 'time', formatTime(message.created_at));
  time.dateTime = message.created_at;
  header.append(time);
  if (onEdit && message.role === 'user') {
    const edit = el('button', 'link-button edit', 'Edit');
    edit.type = 'button';
    edit.title = 'Edit this message and run the chat again from it';
    edit.addEventListener('click', () => onEdit(message, node));
    header.append(edit);
  }
  node.append(header);
  const body = el('div', 'message-body');
  renderParts(message.content, body, { plainText: message.role === 'user' });
  node.append(body);
  return node;
}

/** A draft (a step in progress): the same parts, marked as still coming. */
export function renderDraft(draft, previous) {
  const node = el('article', 'message role-assistant draft');
  node.dataset.generation = String(draft.generation);
  node.dataset.step = String(draft.step);
  node.setAttribute('aria-busy', 'true');
  const header = el('header', 'message-header');
  header.append(el('span', 'role', 'Assistant'), el('span', 'typing', 'writing…'));
  node.append(header);
  const body = el('div', 'message-body');
  renderParts(draft.blocks, body, {});
  node.append(body);
  // Keep the blocks a reader opened open while the draft grows.
  if (previous) {
    const open = new Set([...previous.querySelectorAll('details[open]')].map((d) => d.dataset.key));
    for (const details of node.querySelectorAll('details')) if (open.has(details.dataset.key)) details.open = true;
  }
  return node;
}

/** Renders message parts into `parent`. User text is shown as typed. */
export function renderParts(parts, parent, { plainText = false }) {
  parts.forEach((part, index) => {
    const key = `${index}:${part.type}`;
    switch (part.type) {
      case 'text': {
        const text = el('div', plainText ? 'text plain' : 'text md');
        if (plainText) text.textContent = part.text;
        else text.append(renderMarkdown(part.text));
        parent.append(text);
        break;
      }
      case 'reasoning':
        parent.append(collapsible('reasoning', key, 'Reasoning', renderMarkdown(part.text)));
        break;
      case 'tool_call': {
        const args = part.args !== undefined ? pretty(part.args) : part.args_text ?? '';
        const summary = [el('span', null, 'Tool call '), el('code', null, part.name)];
        parent.append(collapsible('tool tool-call', key, summary, el('pre', null, args)));
        break;
      }
      case 'tool_result': {
        const summary = [el('span', null, part.is_error ? 'Tool error ' : 'Tool result '), el('code', null, part.name)];
        const block = collapsible(`tool tool-result${part.is_error ? ' is-error' : ''}`, key, summary, el('pre', null, pretty(part.result)));
        parent.append(block);
        break;
      }
      case 'file':
        parent.append(el('div', 'file', `Attachment: ${part.name ?? part.file_id} (${part.media_type})`));
        break;
      case 'source': {
        const source = el('div', 'source');
        source.append(renderMarkdown(`Source: [${escapeLabel(part.title || part.url)}](<${part.url}>)`));
        parent.append(source);
        break;
      }
      default:
        parent.append(el('div', 'unknown-part', `[${part.type}]`));
    }
  });
}

function collapsible(className, key, summary, content) {
  const details = el('details', className);
  details.dataset.key = key;
  const head = el('summary');
  head.append(...(Array.isArray(summary) ? summary : [summary]));
  details.append(head, content);
  return details;
}

function escapeLabel(text) {
  return text.replace(/[\\[\]`*_~<>]/g, '\\$&');
}

function pretty(value) {
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

export function formatTime(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : date.toLocaleDateString([], { month: 'short', day: 'numeric' });
}
