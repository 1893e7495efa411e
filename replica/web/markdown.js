// A small, safe Markdown subset rendered straight into DOM nodes.
//
// Model output is untrusted text. Nothing here builds HTML from strings:
// every element comes from createElement and every piece of text from a
// text node, so `<img onerror=…>` in a reply is shown as those characters.
// Links keep only http:, https: and mailto: targets (after the browser's
// own URL parsing, so `java\tscript:` and friends are caught); anything else
// is shown as plain text. Images are never loaded (the page makes no
// requests beyond its replicas): they become links.
//
// Blocks: paragraphs (a single newline is a line break), ATX headings,
// fenced code, block quotes, bullet and numbered lists (nested by
// indentation), tables, horizontal rules. Inline: code spans, strong,
// emphasis, strikethrough, links, autolinks, backslash escapes.

const SAFE_PROTOCOLS = new Set(['http:', 'https:', 'mailto:']);
const ESCAPABLE = '\\`*_{}[]()#+-.!|~<>"\'';

/** Renders `text` as Markdown into a new DocumentFragment. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  renderBlocks(text.replace(/\r\n?/g, '\n').split('\n'), fragment);
  return fragment;
}

/** The URL if it is absolute and its protocol is safe to follow, else null. */
export function safeUrl(raw) {
  let url;
  try {
    url = new URL(raw.trim());
  } catch {
    return null;
  }
  return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
}

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+.#-]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( *)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_DIVIDER = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

function renderBlocks(lines, parent) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === '') {
      i++;
      continue;
    }
    let match;
    if ((match = FENCE.exec(line))) {
      i = fencedCode(lines, i, match, parent);
    } else if ((match = HEADING.exec(line))) {
      const heading = el(`h${match[1].length}`);
      renderInline(match[2], heading);
      parent.append(heading);
      i++;
    } else if (RULE.test(line)) {
      parent.append(el('hr'));
      i++;
    } else if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) quoted.push(lines[i++].replace(QUOTE, ''));
      const quote = el('blockquote');
      renderBlocks(quoted, quote);
      parent.append(quote);
    } else if (ITEM.test(line)) {
      i = list(lines, i, parent);
    } else if (line.includes('|') && i + 1 < lines.length && TABLE_DIVIDER.test(lines[i + 1])) {
      i = table(lines, i, parent);
    } else {
      i = paragraph(lines, i, parent);
    }
  }
}

function fencedCode(lines, start, match, parent) {
  const fence = match[1];
  const body = [];
  let i = start + 1;
  while (i < lines.length && !lines[i].trimStart().startsWith(fence)) body.push(lines[i++]);
  const pre = el('pre');
  const code = el('code');
  if (match[2]) code.dataset.language = match[2];
  code.textContent = body.join('\n');
  pre.append(code);
  parent.append(pre);
  return i + 1;
}

/** True when `line` starts a block other than a paragraph. */
function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function paragraph(lines, start, parent) {
  const p = el('p');
  let i = start;
  while (i < lines.length && lines[i].trim() !== '' && (i === start || !startsBlock(lines[i]))) {
    if (i > start) p.append(el('br'));
    renderInline(lines[i].trim(), p);
    i++;
  }
  parent.append(p);
  return i;
}

function list(lines, start, parent) {
  const first = ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const node = el(ordered ? 'ol' : 'ul');
  if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
  let i = start;
  while (i < lines.length) {
    const match = ITEM.exec(lines[i]);
    if (!match || match[1].length !== indent || /\d/.test(match[2]) !== ordered) break;
    // The item: its first line, then every following line indented past
    // the marker (a blank line ends it unless indented text follows).
    const content = [match[3]];
    i++;
    while (i < lines.length) {
      const next = lines[i];
      const nested = ITEM.exec(next);
      if (next.trim() === '') {
        if (i + 1 < lines.length && indentation(lines[i + 1]) > indent) {
          content.push('');
          i++;
          continue;
        }
        break;
      }
      if (nested && nested[1].length <= indent) break;
      if (indentation(next) <= indent && !nested) {
        // A lazy continuation of the item's text.
        if (startsBlock(next)) break;
      }
      content.push(next.slice(Math.min(indentation(next), indent + 2)));
      i++;
    }
    const item = el('li');
    if (content.length === 1) {
      renderInline(content[0], item);
    } else {
      renderBlocks(content, item);
      // A tight item (one paragraph, maybe a nested list) shows no margins.
      const only = item.firstElementChild;
      if (only && only.tagName === 'P') only.replaceWith(...only.childNodes);
    }
    node.append(item);
    while (i < lines.length && lines[i].trim() === '' && ITEM.test(lines[i + 1] || '')) i++;
  }
  parent.append(node);
  return i;
}

function indentation(line) {
  return line.length - line.trimStart().length;
}

function cells(line) {
  let text = line.trim();
  if (text.startsWith('|')) text = text.slice(1);
  if (text.endsWith('|') && !text.endsWith('\\|')) text = text.slice(0, -1);
  return text.split(/(?<!\\)\|/).map((cell) => cell.trim());
}

function tableRow(line, cellTag) {
  const row = el('tr');
  for (const text of cells(line)) {
    const cell = el(cellTag);
    renderInline(text, cell);
    row.append(cell);
  }
  return row;
}

function table(lines, start, parent) {
  const wrap = el('div', 'table-wrap');
  const node = el('table');
  const head = el('thead');
  head.append(tableRow(lines[start], 'th'));
  const body = el('tbody');
  let i = start + 2;
  while (i < lines.length && lines[i].includes('|') && lines[i].trim() !== '') body.append(tableRow(lines[i++], 'td'));
  node.append(head, body);
  wrap.append(node);
  parent.append(wrap);
  return i;
}

/** Renders inline Markdown of `text` into `parent`. */
export function renderInline(text, parent) {
  let buffer = '';
  const flush = () => {
    if (buffer) parent.append(document.createTextNode(buffer));
    buffer = '';
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '\\' && i + 1 < text.length && ESCAPABLE.includes(text[i + 1])) {
      buffer += text[i + 1];
      i += 2;
      continue;
    }
    const found =
      (c === '`' && codeSpan(text, i)) ||
      ((c === '*' || c === '_' || c === '~') && emphasis(text, i)) ||
      ((c === '[' || (c === '!' && text[i + 1] === '[')) && link(text, i)) ||
      (c === '<' && autolink(text, i)) ||
      ((c === 'h' || c === 'H') && bareUrl(text, i, buffer));
    if (found) {
      flush();
      parent.append(found.node);
      i = found.end;
      continue;
    }
    buffer += c;
    i++;
  }
  flush();
}

function run(text, at, char) {
  let n = 0;
  while (text[at + n] === char) n++;
  return n;
}

function codeSpan(text, start) {
  const n = run(text, start, '`');
  const fence = '`'.repeat(n);
  let search = start + n;
  for (;;) {
    const end = text.indexOf(fence, search);
    if (end < 0) return null;
    if (run(text, end, '`') === n) {
      const code = el('code');
      let inner = text.slice(start + n, end);
      if (/^ .* $/.test(inner)) inner = inner.slice(1, -1);
      code.textContent = inner;
      return { node: code, end: end + n };
    }
    search = end + run(text, end, '`');
  }
}

function isWordChar(c) {
  return c !== undefined && /[\p{L}\p{N}]/u.test(c);
}

function emphasis(text, start) {
  const char = text[start];
  const n = Math.min(run(text, start, char), 3);
  if (char === '~' && n !== 2) return null;
  // `_` inside words (snake_case) is not emphasis.
  if (char === '_' && isWordChar(text[start - 1])) return null;
  const open = start + n;
  if (open >= text.length || /\s/.test(text[open])) return null;
  const delimiter = char.repeat(n);
  let search = open + 1;
  for (;;) {
    const end = text.indexOf(delimiter, search);
    if (end < 0) return null;
    const closes =
      !/\s/.test(text[end - 1]) && !(char === '_' && isWordChar(text[end + n])) && run(text, end, char) === n;
    if (closes) {
      const inner = text.slice(open, end);
      let node;
      if (char === '~') node = el('del');
      else if (n === 1) node = el('em');
      else if (n === 2) node = el('strong');
      else {
        node = el('strong');
        const em = el('em');
        node.append(em);
        renderInline(inner, em);
        return { node, end: end + n };
      }
      renderInline(inner, node);
      return { node, end: end + n };
    }
    search = end + run(text, end, char);
  }
}

/** The index after the bracket that closes the one at `start`, or -1. */
function closing(text, start, open, close) {
  let depth = 0;
  for (let i = start; i < text.length; i++) {
    if (text[i] === '\\') {
      i++;
    } else if (text[i] === open) {
      depth++;
    } else if (text[i] === close && --depth === 0) {
      return i + 1;
    }
  }
  return -1;
}

function link(text, start) {
  const image = text[start] === '!';
  const labelStart = image ? start + 1 : start;
  const labelEnd = closing(text, labelStart, '[', ']');
  if (labelEnd < 0 || text[labelEnd] !== '(') return null;
  const targetEnd = closing(text, labelEnd, '(', ')');
  if (targetEnd < 0) return null;
  const label = text.slice(labelStart + 1, labelEnd - 1);
  const target = text.slice(labelEnd + 1, targetEnd - 1).trim();
  const titled = /^(\S+)\s+(?:"([^"]*)"|'([^']*)')$/.exec(target);
  const href = safeUrl(titled ? titled[1] : target.replace(/^<(.*)>$/, '$1'));
  const title = titled ? titled[2] ?? titled[3] : null;
  const node = href ? anchor(href) : el('span', 'unsafe-link');
  if (image) {
    node.classList.add('image-link');
    node.append(document.createTextNode(label || 'image'));
  } else {
    renderInline(label, node);
  }
  if (title) node.title = title;
  if (!href) node.title = `link not followed: ${target}`;
  return { node, end: targetEnd };
}

function anchor(href) {
  const a = el('a');
  a.href = href;
  a.rel = 'noopener noreferrer nofollow';
  a.target = '_blank';
  return a;
}

function autolink(text, start) {
  const end = text.indexOf('>', start);
  if (end < 0) return null;
  const inner = text.slice(start + 1, end);
  if (/\s/.test(inner)) return null;
  const href = safeUrl(/^[^@\s]+@[^@\s]+$/.test(inner) && !inner.includes(':') ? `mailto:${inner}` : inner);
  if (!href) return null;
  const a = anchor(href);
  a.textContent = inner;
  return { node: a, end: end + 1 };
}

function bareUrl(text, start, before) {
  if (before && isWordChar(before[before.length - 1])) return null;
  const match = /^https?:\/\/[^\s<>"'`]+/i.exec(text.slice(start));
  if (!match) return null;
  // Trailing punctuation belongs to the sentence, not the URL.
  let url = match[0].replace(/[.,;:!?*_~]+$/, '');
  if (url.endsWith(')') && !url.includes('(')) url = url.slice(0, -1);
  const href = safeUrl(url);
  if (!href) return null;
  const a = anchor(href);
  a.textContent = url;
  return { node: a, end: start + url.length };
}
