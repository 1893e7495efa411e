// The web page in a real browser, against a chatd cluster that
// replica/tests/web.rs started: two replicas, the page served by replica 1
// through a proxy the test can cut (CHATD_PAGE_URL), chats run wherever.
//
// Every step asserts what a user would see, waits for it with a deadline,
// and saves a screenshot under CHATD_OUTPUT_DIR. The run fails (exit 1)
// on the first failed step, with a screenshot of the moment.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (replica/tests/web.rs sets it)`);
  return value;
}

const PAGE = env('CHATD_PAGE_URL');
const [REPLICA1, REPLICA2] = env('CHATD_REPLICA_URLS').split(',');
const TOKEN = env('CHATD_TOKEN');
const CONTROL = env('CHATD_CONTROL_URL');
const OUT = env('CHATD_OUTPUT_DIR');
const CHROMIUM = env('CHATD_CHROMIUM');

/** How long any one condition may take. */
const DEADLINE_MS = 30000;
/** Words of a long reply and the pause between them: long enough to act while it streams. */
const LONG_WORDS = 200;
const LONG_DELAY_MS = 30;

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const measurements = {};
mkdirSync(OUT, { recursive: true });

// ----------------------------------------------------------------- helpers

function log(text) {
  process.stdout.write(`${text}\n`);
}

async function eventually(what, probe, timeout = DEADLINE_MS) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/**
 * The API, from the test's side: replica 1 directly, else whichever answers
 * (replicas are stopped and the page's origin cut along the way).
 */
async function api(method, path, body) {
  let response;
  for (const base of [REPLICA1, PAGE, REPLICA2]) {
    try {
      response = await fetch(`${base}/api/v1${path}`, {
        method,
        headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      break;
    } catch (error) {
      if (base === REPLICA2) throw error;
    }
  }
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function control(path) {
  const response = await fetch(`${CONTROL}${path}`, { method: 'POST' });
  check(response.ok, `control ${path}: ${response.status}`);
}

function words(count, prefix) {
  return Array.from({ length: count }, (_, i) => `${prefix}${String(i + 1).padStart(3, '0')}`);
}

function mock(script) {
  return `@mock ${JSON.stringify(script)}`;
}

function wordsOf(text) {
  return text.split(/\s+/).filter(Boolean);
}

/** Every sample must be the script's beginning: no word twice, none missing. */
function checkPrefixes(samples, script, what) {
  for (const sample of samples) {
    const seen = wordsOf(sample.text);
    check(seen.length <= script.length, `${what}: ${seen.length} words shown, the reply has ${script.length}: ${sample.text.slice(0, 200)}`);
    seen.forEach((word, i) => {
      const partial = i === seen.length - 1 && script[i].startsWith(word);
      check(word === script[i] || partial, `${what}: word ${i + 1} shown is ${word}, expected ${script[i]} (shown: …${seen.slice(Math.max(0, i - 3), i + 3).join(' ')}…)`);
    });
  }
}

async function storedAssistantTexts(chatId) {
  const page = await api('GET', `/chats/${chatId}/messages?limit=200`);
  return page.messages
    .filter((message) => message.role === 'assistant')
    .map((message) => message.content.filter((part) => part.type === 'text').map((part) => part.text).join(''));
}

async function waitIdle(chatId) {
  return eventually(`chat ${chatId} to be idle`, async () => {
    const chat = await api('GET', `/chats/${chatId}`);
    return (chat.status === 'waiting' || chat.status === 'error') && chat;
  });
}

// Installed before the page's scripts on every load: records each distinct
// draft text (with its time), CSP violations, and what would mean an
// injection ran.
const INIT_SCRIPT = () => {
  window.__samples = [];
  window.__violations = [];
  document.addEventListener('securitypolicyviolation', (event) => {
    window.__violations.push(`${event.violatedDirective} ${event.blockedURI}`);
  });
  let last = '';
  new MutationObserver(() => {
    const bodies = document.querySelectorAll('#draft-list article.draft .message-body');
    const text = [...bodies].map((body) => body.textContent).join(' ');
    if (text !== last) {
      last = text;
      window.__samples.push({ t: performance.now(), text });
    }
  }).observe(document, { subtree: true, childList: true, characterData: true });
};

class PageDriver {
  constructor(page, name) {
    this.page = page;
    this.name = name;
    this.errors = [];
    page.on('pageerror', (error) => this.errors.push(String(error)));
  }

  async shot(name) {
    await this.page.screenshot({ path: join(OUT, `${name}.png`) });
  }

  /** Draft samples recorded since the last call. */
  async samples() {
    return this.page.evaluate(() => window.__samples.splice(0));
  }

  async draftText() {
    return this.page.evaluate(() =>
      [...document.querySelectorAll('#draft-list article.draft .message-body')].map((b) => b.textContent).join(' '),
    );
  }

  async assistantTexts() {
    return this.page.evaluate(() =>
      [...document.querySelectorAll('#message-list article.role-assistant .message-body')].map((b) => b.textContent.trim()),
    );
  }

  async chatId() {
    return eventually('the chat in the address', () => new URLSearchParams(new URL(this.page.url()).hash.slice(1)).get('chat'));
  }

  async status() {
    return this.page.evaluate(() => document.querySelector('#chat-status .badge')?.dataset.status ?? null);
  }

  async waitStatus(status) {
    return eventually(`status ${status}`, async () => (await this.status()) === status);
  }

  async waitDraftWords(count) {
    return eventually(`a draft of ${count} words`, async () => {
      const shown = wordsOf(await this.draftText());
      return shown.length >= count && shown.length;
    });
  }

  /** Types `text` into the composer and presses Enter. */
  async send(text) {
    await this.page.fill('#composer-input', text);
    await this.page.press('#composer-input', 'Enter');
  }

  async waitNoDraft() {
    await eventually('the draft to be replaced by the message', async () => (await this.draftText()) === '');
  }

  async connection() {
    return this.page.textContent('#connection');
  }
}

/**
 * Sends a long reply and returns its words; waits until `words` of it show.
 */
async function startLongReply(driver, prefix, { atLeast = 20 } = {}) {
  const script = words(LONG_WORDS, prefix);
  await driver.samples();
  await driver.send(mock({ text: script.join(' '), token_delay_ms: LONG_DELAY_MS }));
  await driver.waitDraftWords(atLeast);
  return script;
}

/** Waits for a reply to end and checks what was shown against what was stored. */
async function finishReply(driver, chatId, script, what) {
  await waitIdle(chatId);
  await driver.waitNoDraft();
  const samples = await driver.samples();
  checkPrefixes(samples, script, what);
  const stored = (await storedAssistantTexts(chatId)).at(-1);
  const shown = await eventually(`the final message of ${what}`, async () => {
    const texts = await driver.assistantTexts();
    return texts.at(-1) === stored.trim() && texts.at(-1);
  });
  return { samples, stored, shown };
}

// ------------------------------------------------------------------- steps

const steps = [];
function step(name, run) {
  steps.push({ name, run });
}

let desktop;
let firstChat;
let context;

step('first load shows the sign-in form; bytes transferred are measured', async () => {
  const page = desktop.page;
  const sizes = [];
  const finished = (request) => sizes.push(request.sizes().then((size) => ({ url: request.url(), size })));
  page.on('requestfinished', finished);
  await page.goto(PAGE, { waitUntil: 'load' });
  await page.waitForSelector('#signin-token', { state: 'visible' });
  page.off('requestfinished', finished);
  const resolved = await Promise.all(sizes);
  measurements.first_load_requests = resolved.length;
  measurements.first_load_bytes = resolved.reduce((sum, { size }) => sum + size.responseBodySize + size.responseHeadersSize, 0);
  measurements.first_load_body_bytes = resolved.reduce((sum, { size }) => sum + size.responseBodySize, 0);
  await desktop.shot('01-sign-in');
  // Again, with the browser's copies: every file is revalidated (304).
  const again = [];
  const refinished = (request) => again.push(request.sizes().then((size) => size.responseBodySize + size.responseHeadersSize));
  page.on('requestfinished', refinished);
  await page.reload({ waitUntil: 'load' });
  await page.waitForSelector('#signin-token', { state: 'visible' });
  page.off('requestfinished', refinished);
  measurements.reload_bytes = (await Promise.all(again)).reduce((sum, bytes) => sum + bytes, 0);
});

step('a wrong token is refused; the right one signs in', async () => {
  const page = desktop.page;
  await page.fill('#signin-token', 'chatd_00000000000000000000000000000000');
  await page.click('#signin-form button[type=submit]');
  await eventually('the refusal', async () => (await page.textContent('#signin-error')).includes('not valid'));
  await page.fill('#signin-token', TOKEN);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#app', { state: 'visible' });
  check(await page.isHidden('#signin'), 'the sign-in form is still shown');
  // The other replica, to fail over to.
  await page.click('#settings-button');
  await page.fill('#settings-replicas', REPLICA2);
  await page.click('#settings-save');
  await eventually('the connection to be live', async () => (await desktop.connection()) === new URL(PAGE).host);
  await desktop.shot('02-signed-in');
});

step('a new chat streams its reply in parts, then shows the final message', async () => {
  const page = desktop.page;
  await page.click('#new-chat');
  const script = words(120, 'w');
  await desktop.samples();
  await page.fill('#composer-input', mock({ text: script.join(' '), token_delay_ms: 25 }));
  await page.evaluate(() => {
    window.__sentAt = null;
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && window.__sentAt === null) window.__sentAt = performance.now();
    }, { capture: true });
  });
  await page.press('#composer-input', 'Enter');
  firstChat = await desktop.chatId();
  await desktop.waitDraftWords(30);
  await desktop.shot('03-streaming');
  const { samples, shown } = await finishReply(desktop, firstChat, script, 'the first reply');
  const sentAt = await page.evaluate(() => window.__sentAt);
  const first = samples.find((sample) => sample.text.trim() !== '');
  measurements.new_chat_send_to_first_token_ms = Math.round(first.t - sentAt);
  const partial = new Set(samples.map((sample) => sample.text).filter((text) => text.trim() !== ''));
  check(partial.size >= 5, `the reply appeared in ${partial.size} steps, expected it to grow in parts`);
  check(wordsOf(shown).join(' ') === script.join(' '), `the final message shows ${shown.slice(0, 100)}…`);
  await eventually('the chat in the list, waiting', () =>
    page.evaluate((id) => document.querySelector(`.chat-item[data-chat-id="${id}"] .badge`)?.dataset.status === 'waiting', firstChat),
  );
  await desktop.shot('04-final');
});

step('send to first visible token in an open chat', async () => {
  const page = desktop.page;
  const times = [];
  for (let i = 0; i < 5; i++) {
    await desktop.samples();
    const reply = words(20, `t${i}-`).join(' ');
    await page.fill('#composer-input', mock({ text: reply, ttft_ms: 0, token_delay_ms: 20 }));
    const sentAt = await page.evaluate(() => performance.now());
    await page.press('#composer-input', 'Enter');
    await eventually('the answer', async () => (await desktop.assistantTexts()).at(-1) === reply);
    await desktop.waitNoDraft();
    const samples = await desktop.samples();
    const first = samples.find((sample) => sample.text.trim() !== '');
    check(first, 'no draft was shown');
    times.push(first.t - sentAt);
  }
  times.sort((a, b) => a - b);
  measurements.open_chat_send_to_first_token_ms = { median: Math.round(times[2]), min: Math.round(times[0]), max: Math.round(times[4]) };
});

step('Shift+Enter makes a new line, Enter sends', async () => {
  const page = desktop.page;
  const before = await page.locator('#message-list article.role-user').count();
  await page.fill('#composer-input', 'line one');
  await page.press('#composer-input', 'Shift+Enter');
  await page.locator('#composer-input').pressSequentially('line two');
  check((await page.inputValue('#composer-input')) === 'line one\nline two', 'Shift+Enter did not make a new line');
  check((await page.locator('#message-list article.role-user').count()) === before, 'Shift+Enter sent the message');
  await page.locator('#composer-input').pressSequentially(` ${mock({ text: 'two lines received' })}`);
  await page.press('#composer-input', 'Enter');
  await eventually('the two-line message', async () => (await page.locator('#message-list article.role-user .text.plain').last().textContent()).startsWith('line one\nline two'));
  await waitIdle(firstChat);
  check((await page.inputValue('#composer-input')) === '', 'the composer was not cleared');
});

step('Markdown renders safely: no HTML injection, no javascript: links', async () => {
  const page = desktop.page;
  const reply = [
    '**bold** and *em* and `<i>code</i>`',
    '',
    '<img src=x onerror="window.__xss=\'reply\'"> <script>window.__xss=\'script\'</script>',
    '',
    "[click me](javascript:window.__xss='link') [tab](java\tscript:window.__xss='tab') [safe](https://example.com/page)",
    '',
    '- item one',
    '- item two',
    '',
    '```',
    '<b>not bold</b>',
    '```',
  ].join('\n');
  await page.fill('#composer-input', `<img src=x onerror="window.__xss='user'"> [user](javascript:window.__xss='userlink') ${mock({ text: reply })}`);
  await page.press('#composer-input', 'Enter');
  await eventually('the Markdown reply', () => page.evaluate(() => document.querySelector('#message-list article.role-assistant:last-of-type strong')?.textContent === 'bold'));
  const found = await page.evaluate(() => {
    const messages = document.querySelector('#messages');
    const last = [...messages.querySelectorAll('#message-list article.role-assistant')].at(-1);
    return {
      xss: window.__xss,
      violations: window.__violations,
      images: messages.querySelectorAll('img').length,
      scripts: messages.querySelectorAll('script').length,
      bolds: messages.querySelectorAll('b, i').length,
      badLinks: [...messages.querySelectorAll('a')].filter((a) => !['http:', 'https:', 'mailto:'].includes(a.protocol)).map((a) => a.href),
      unsafe: [...last.querySelectorAll('.unsafe-link')].map((node) => node.textContent),
      safe: [...last.querySelectorAll('a')].map((a) => ({ href: a.href, rel: a.rel })),
      items: last.querySelectorAll('li').length,
      em: last.querySelector('em')?.textContent,
      code: [...last.querySelectorAll('code')].map((node) => node.textContent),
      imgText: last.textContent.includes('<img src=x onerror='),
      userText: [...messages.querySelectorAll('#message-list article.role-user')].at(-1).textContent.includes('<img src=x onerror='),
    };
  });
  check(found.xss === undefined, `injected script ran: window.__xss = ${found.xss}`);
  check(found.violations.length === 0, `CSP violations (something tried to run): ${found.violations}`);
  check(found.images === 0 && found.scripts === 0 && found.bolds === 0, `markup was injected: ${JSON.stringify(found)}`);
  check(found.badLinks.length === 0, `unsafe links: ${found.badLinks}`);
  check(found.unsafe.includes('click me') && found.unsafe.includes('tab'), `javascript: links not shown as text: ${found.unsafe}`);
  check(found.safe.length === 1 && found.safe[0].href === 'https://example.com/page' && found.safe[0].rel.includes('noopener'), `safe link: ${JSON.stringify(found.safe)}`);
  check(found.items === 2 && found.em === 'em', `Markdown not rendered: ${JSON.stringify(found)}`);
  check(found.code.includes('<i>code</i>') && found.code.includes('<b>not bold</b>'), `code: ${found.code}`);
  check(found.imgText && found.userText, 'the markup is not shown as text');
  const url = page.url();
  await page.click('#message-list article.role-assistant:last-of-type .unsafe-link >> text=click me');
  check((await page.evaluate(() => window.__xss)) === undefined && page.url() === url, 'clicking the javascript: link did something');
  await desktop.shot('05-markdown-xss');
});

step('reasoning and tool calls show as collapsed blocks that open', async () => {
  const page = desktop.page;
  await page.fill('#composer-input', mock({
    steps: [
      { thinking: 'Let me think about it.', tool_calls: [{ name: 'test_sleep', args: { ms: 1500 } }, { name: 'test_fail', args: { message: 'it broke' } }] },
      { text: 'All done.' },
    ],
  }));
  await page.press('#composer-input', 'Enter');
  // The step's calls are on record before they run (the tool-call ledger):
  // they show in the draft, then in the stored message, while test_sleep runs.
  await eventually('the tool calls while they run', () => page.evaluate(() => document.querySelectorAll('#draft-list details.tool-call, #message-list details.tool-call').length === 2));
  await desktop.shot('06-tools-running');
  await eventually('the answer after the tools', async () => (await desktop.assistantTexts()).at(-1) === 'All done.');
  await waitIdle(firstChat);
  const found = await page.evaluate(() => {
    const list = document.querySelector('#message-list');
    const reasoning = [...list.querySelectorAll('details.reasoning')].at(-1);
    const calls = [...list.querySelectorAll('details.tool-call')].slice(-2);
    const results = [...list.querySelectorAll('details.tool-result')].slice(-2);
    return {
      reasoning: reasoning && { open: reasoning.open, text: reasoning.textContent },
      calls: calls.map((d) => ({ open: d.open, name: d.querySelector('summary code').textContent })),
      results: results.map((d) => ({ open: d.open, error: d.classList.contains('is-error'), text: d.textContent })),
    };
  });
  check(found.reasoning && !found.reasoning.open && found.reasoning.text.includes('Let me think about it.'), `reasoning: ${JSON.stringify(found.reasoning)}`);
  check(found.calls.map((c) => c.name).join() === 'test_sleep,test_fail' && found.calls.every((c) => !c.open), `calls: ${JSON.stringify(found.calls)}`);
  check(found.results.length === 2 && found.results.every((r) => !r.open) && found.results[1].error && found.results[1].text.includes('it broke'), `results: ${JSON.stringify(found.results)}`);
  const call = page.locator('#message-list details.tool-call').last();
  await call.locator('summary').click();
  check(await call.evaluate((d) => d.open), 'the tool call does not open');
  await page.locator('#message-list details.reasoning').last().locator('summary').click();
  await page.locator('#message-list details.tool-result').last().locator('summary').click();
  await desktop.shot('07-tools-opened');
});

step('a message sent while busy is queued; "Send now" promotes it', async () => {
  const page = desktop.page;
  check((await page.inputValue('#busy-behavior')) === 'queue', 'the busy behaviour is not queue by default');
  const script = await startLongReply(desktop, 'q', { atLeast: 10 });
  await desktop.waitStatus('running');
  check(await page.isVisible('#interrupt'), 'no interrupt button while running');
  await page.fill('#composer-input', `next please ${mock({ text: 'queued reply done' })}`);
  await page.press('#composer-input', 'Enter');
  await eventually('the queued message', async () => (await page.locator('#queue-list li').count()) === 1);
  check((await page.textContent('#queue-list li')).includes('next please'), 'the queue shows something else');
  await desktop.shot('08-queued');
  await page.click('#queue-list li button:has-text("Send now")');
  await eventually('the queue to empty', () => page.isHidden('#queue'));
  await eventually('the queued message to be answered', async () => (await desktop.assistantTexts()).at(-1) === 'queued reply done');
  await waitIdle(firstChat);
  const stored = await storedAssistantTexts(firstChat);
  const partial = stored.at(-2);
  const partialWords = wordsOf(partial);
  check(partialWords.length > 0 && partialWords.length < script.length, `the interrupted reply has ${partialWords.length} words`);
  checkPrefixes([{ text: partial }], script, 'the interrupted reply');
  const shown = await desktop.assistantTexts();
  check(shown.at(-2) === partial.trim(), `the interrupted reply shows ${shown.at(-2)?.slice(0, 80)}…`);
  await desktop.shot('09-promoted');
});

step('the busy behaviour can reject or interrupt instead of queueing', async () => {
  const page = desktop.page;
  const script = await startLongReply(desktop, 'b', { atLeast: 5 });
  await page.selectOption('#busy-behavior', 'reject');
  await desktop.send(`refused ${mock({ text: 'never' })}`);
  await eventually('the refusal', async () => (await page.textContent('#notice')).includes('busy'));
  check((await page.inputValue('#composer-input')).startsWith('refused'), 'the refused message left the composer');
  await page.selectOption('#busy-behavior', 'interrupt');
  await desktop.send(`instead ${mock({ text: 'the interrupting reply' })}`);
  await eventually('the interrupting reply', async () => (await desktop.assistantTexts()).at(-1) === 'the interrupting reply');
  await waitIdle(firstChat);
  const stored = await storedAssistantTexts(firstChat);
  checkPrefixes([{ text: stored.at(-2) }], script, 'the interrupted reply');
  check(wordsOf(stored.at(-2)).length < script.length, 'the reply was not interrupted');
  check(!stored.includes('never'), 'the rejected message ran');
  await page.selectOption('#busy-behavior', 'queue');
  // Statuses this page does not know yet (later waves add some) show as they are.
  const badge = await page.evaluate(async () => {
    const { statusBadge } = await import('/assets/render.js');
    const node = statusBadge('waiting_for_godot');
    return { text: node.textContent, className: node.className };
  });
  check(badge.text === 'waiting for godot' && badge.className.includes('status-other'), `unknown status: ${JSON.stringify(badge)}`);
});

step('Esc interrupts the reply; what was said so far stays', async () => {
  const page = desktop.page;
  const script = await startLongReply(desktop, 'i', { atLeast: 10 });
  await page.keyboard.press('Escape');
  await desktop.waitStatus('waiting');
  const { shown } = await finishReply(desktop, firstChat, script, 'the interrupted reply');
  const count = wordsOf(shown).length;
  check(count >= 10 && count < script.length, `the interrupted reply shows ${count} words`);
  checkPrefixes([{ text: shown }], script, 'the interrupted reply');
  check(await page.isHidden('#interrupt'), 'the interrupt button is still shown');
  await desktop.shot('10-interrupted');
});

step('a reload mid-reply resumes it where it was: no word twice, none missing', async () => {
  const page = desktop.page;
  const script = await startLongReply(desktop, 'r', { atLeast: 30 });
  checkPrefixes(await desktop.samples(), script, 'before the reload');
  const before = wordsOf(await desktop.draftText()).length;
  await page.reload({ waitUntil: 'load' });
  const after = await desktop.waitDraftWords(1);
  check(after >= before, `after the reload the draft starts at ${after} words, it had ${before}`);
  await desktop.shot('11-reloaded-mid-reply');
  const { samples, shown } = await finishReply(desktop, firstChat, script, 'the reloaded reply');
  check(samples.length > 0, 'nothing streamed after the reload');
  check(wordsOf(shown).join(' ') === script.join(' '), `after the reload the message shows ${shown.slice(0, 100)}…`);
  measurements.reload_resumed_at_words = { before, after };
});

step('the chat list follows chats created, renamed and archived through the API', async () => {
  const page = desktop.page;
  const chat = await api('POST', '/chats', { title: 'Made by the API' });
  await eventually('the new chat at the top of the list', () =>
    page.evaluate((id) => document.querySelector('.chat-item')?.dataset.chatId === id, chat.id),
  );
  await api('PATCH', `/chats/${chat.id}`, { title: 'Renamed by the API' });
  await eventually('the new title', () =>
    page.evaluate((id) => document.querySelector(`.chat-item[data-chat-id="${id}"]`)?.textContent.includes('Renamed by the API'), chat.id),
  );
  await desktop.shot('12-watch');
  await api('PATCH', `/chats/${chat.id}`, { archived: true });
  await eventually('the archived chat to leave the list', () =>
    page.evaluate((id) => !document.querySelector(`.chat-item[data-chat-id="${id}"]`), chat.id),
  );
  await page.click('#filter-archived');
  await eventually('the chat under Archived', () =>
    page.evaluate((id) => Boolean(document.querySelector(`.chat-item[data-chat-id="${id}"]`)), chat.id),
  );
  await page.click('#filter-active');
  await eventually('the first chat back in the list', () =>
    page.evaluate((id) => Boolean(document.querySelector(`.chat-item[data-chat-id="${id}"]`)), firstChat),
  );
});

step('the chat list pages as it scrolls', async () => {
  const page = desktop.page;
  const fillers = [];
  for (let i = 0; i < 35; i++) fillers.push((await api('POST', '/chats', { title: `Filler ${i + 1}` })).id);
  const total = (await api('GET', '/chats?limit=200')).chats.length;
  await page.reload({ waitUntil: 'load' });
  await eventually('the first page of chats', async () => (await page.locator('.chat-item').count()) === 30);
  check(await page.isVisible('#more-chats'), 'no way to load more chats');
  await eventually('every chat, scrolling down', async () => {
    await page.evaluate(() => {
      const scroll = document.querySelector('.chat-list-scroll');
      scroll.scrollTop = scroll.scrollHeight;
    });
    return (await page.locator('.chat-item').count()) === total;
  });
  const ids = await page.evaluate(() => [...document.querySelectorAll('.chat-item')].map((item) => item.dataset.chatId));
  check(new Set(ids).size === ids.length && ids.every((id, i) => i === 0 || id < ids[i - 1]), 'chats repeated or not newest first');
  check(await page.isHidden('#more-chats'), 'more to load after the last page');
  for (const id of fillers) await api('DELETE', `/chats/${id}`);
  await eventually('the deleted chats to leave the list', async () => (await page.locator('.chat-item').count()) === total - fillers.length);
});

step('history pages backwards on scroll', async () => {
  const page = desktop.page;
  const chat = await api('POST', '/chats', { title: 'Long history' });
  await control(`/seed/${chat.id}/120`);
  await page.evaluate((id) => {
    location.hash = `chat=${id}`;
  }, chat.id);
  await eventually('the newest page', async () => (await page.locator('#message-list article').count()) === 50);
  check((await page.textContent('#message-list article:last-of-type')).includes('history 120'), 'the newest message is not last');
  await desktop.shot('13-history-newest');
  await eventually('every older page, scrolling up', async () => {
    await page.evaluate(() => {
      document.querySelector('#messages').scrollTop = 0;
    });
    return (await page.locator('#message-list article').count()) === 120;
  });
  const ids = await page.evaluate(() => [...document.querySelectorAll('#message-list article')].map((node) => Number(node.dataset.messageId)));
  check(ids.every((id, i) => i === 0 || id > ids[i - 1]), 'messages are out of order or repeated');
  check((await page.textContent('#message-list article:first-of-type')).includes('history 1'), 'the oldest message is not first');
  await desktop.shot('14-history-oldest');
});

step('editing a past user message runs the chat again from it', async () => {
  const page = desktop.page;
  const chat = await api('POST', '/chats', { text: mock({ text: 'original reply' }) });
  await waitIdle(chat.id);
  await page.evaluate((id) => {
    location.hash = `chat=${id}`;
  }, chat.id);
  await eventually('the original reply', async () => (await desktop.assistantTexts()).at(-1) === 'original reply');
  await page.click('#message-list article.role-user button.edit');
  await page.fill('#message-list article.role-user .edit-form textarea', `edited ${mock({ text: 'edited reply' })}`);
  await page.click('#message-list article.role-user .edit-form button[type=submit]');
  await eventually('the edited reply alone', async () => {
    const texts = await desktop.assistantTexts();
    return texts.length === 1 && texts[0] === 'edited reply';
  });
  check((await page.textContent('#message-list article.role-user .message-body')).startsWith('edited'), 'the user message was not replaced');
  await desktop.shot('15-edited');
});

step('a failed turn shows the error status and its reason; a retry shows a notice', async () => {
  const page = desktop.page;
  await page.click('#new-chat');
  await desktop.send(mock({ error: { status: 400, message: 'the mock says no' } }));
  const chatId = await desktop.chatId();
  await desktop.waitStatus('error');
  await eventually('the last error', async () => (await page.isVisible('#last-error')) && (await page.textContent('#last-error')).length > 10);
  await desktop.shot('16-error');
  await desktop.send(mock({ error: { status: 429, retry_after: 2, times: 1 }, text: 'after the retry' }));
  await eventually('the retry notice', async () => (await page.getAttribute('#notice', 'data-kind')) === 'retry' && page.isVisible('#notice'));
  await desktop.shot('17-retry');
  await eventually('the reply after the retry', async () => (await desktop.assistantTexts()).at(-1) === 'after the retry');
  await waitIdle(chatId);
  await eventually('the notice to go', () => page.isHidden('#notice'));
  check(await page.isHidden('#last-error'), 'the last error is still shown');
  // A stream cut by the model mid-step: the step starts over, and its
  // draft with it.
  const script = words(60, 'c');
  await desktop.samples();
  await desktop.send(mock({ text: script.join(' '), token_delay_ms: 15, cut_after: 20, cut_times: 1 }));
  await eventually('the reply after the cut', async () => (await desktop.assistantTexts()).at(-1) === script.join(' '));
  const { samples } = await finishReply(desktop, chatId, script, 'the reply retried after a cut');
  check(samples.length > 0, 'no draft samples');
});

step('rename, archive, restore and delete from the page', async () => {
  const page = desktop.page;
  const chatId = await desktop.chatId();
  await page.click('#rename');
  await page.fill('#rename-input', 'Renamed in the page');
  await page.press('#rename-input', 'Enter');
  await eventually('the new title', async () => (await page.textContent('#chat-title')) === 'Renamed in the page');
  check((await api('GET', `/chats/${chatId}`)).title === 'Renamed in the page', 'the title was not saved');
  await page.click('#archive');
  await eventually('the chat to leave the list', () => page.evaluate((id) => !document.querySelector(`.chat-item[data-chat-id="${id}"]`), chatId));
  check((await api('GET', `/chats/${chatId}`)).archived, 'the chat was not archived');
  await page.click('#archive');
  await eventually('the chat back in the list', () => page.evaluate((id) => Boolean(document.querySelector(`.chat-item[data-chat-id="${id}"]`)), chatId));
  await page.click('#delete');
  await page.click('#delete-yes');
  await eventually('the chat to be gone', () => page.evaluate((id) => !document.querySelector(`.chat-item[data-chat-id="${id}"]`), chatId));
  const gone = await api('GET', `/chats/${chatId}`).then(() => 'found', (error) => error.message);
  check(gone.includes(' 404 '), `the deleted chat: ${gone}`);
});

step('server-sent events carry a reply when chosen', async () => {
  const page = desktop.page;
  await page.click('#settings-button');
  await page.selectOption('#settings-transport', 'sse');
  await page.click('#settings-save');
  const streams = [];
  const onRequest = (request) => {
    if (request.url().includes('/stream')) streams.push(request.headers().accept ?? '');
  };
  page.on('request', onRequest);
  await page.evaluate((id) => {
    location.hash = `chat=${id}`;
  }, firstChat);
  const script = await startLongReply(desktop, 's', { atLeast: 5 });
  await finishReply(desktop, firstChat, script, 'the reply over SSE');
  page.off('request', onRequest);
  check(streams.length > 0 && streams.every((accept) => accept.includes('text/event-stream')), `stream requests: ${streams}`);
  await page.click('#settings-button');
  await page.selectOption('#settings-transport', 'auto');
  await page.click('#settings-save');
});

step('phone width: the list, then the chat; the sign-in link works', async () => {
  const phone = await context.browser().newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await phone.addInitScript(INIT_SCRIPT);
  const page = await phone.newPage();
  const driver = new PageDriver(page, 'phone');
  const urls = [];
  phone.on('request', (request) => urls.push(request.url()));
  await page.goto(`${PAGE}/#token=${TOKEN}&replicas=${REPLICA2}`);
  await page.waitForSelector('#app', { state: 'visible' });
  check(new URL(page.url()).hash === '', `the token stays in the address: ${page.url()}`);
  check(urls.every((url) => !url.includes(TOKEN)), 'the token was sent in a URL');
  await eventually('the chat list', () => page.isVisible(`.chat-item[data-chat-id="${firstChat}"]`));
  await driver.shot('18-phone-list');
  await page.tap(`.chat-item[data-chat-id="${firstChat}"]`);
  await page.waitForSelector('#composer-input', { state: 'visible' });
  check(await page.isHidden('#sidebar'), 'the list is shown beside the chat on a phone');
  await eventually('the history', async () => (await driver.assistantTexts()).length > 0);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `the page is ${overflow}px wider than the phone`);
  const script = words(40, 'p');
  await driver.send(mock({ text: script.join(' '), token_delay_ms: 20 }));
  await driver.waitDraftWords(5);
  await driver.shot('19-phone-chat-streaming');
  await finishReply(driver, firstChat, script, 'the reply on a phone');
  await page.tap('#back');
  await page.waitForSelector('#sidebar', { state: 'visible' });
  await page.tap('#settings-button');
  await page.tap('#sign-out');
  await page.waitForSelector('#signin-token', { state: 'visible' });
  check((await page.evaluate(() => localStorage.getItem('chatd.token'))) === null, 'the token is still stored after signing out');
  check(driver.errors.length === 0, `page errors: ${driver.errors}`);
  await phone.close();
});

step('where WebSockets cannot connect, the page streams over SSE', async () => {
  const blocked = await context.browser().newContext({ viewport: { width: 1024, height: 700 } });
  await blocked.addInitScript(INIT_SCRIPT);
  // The page's policy, without ws: — as if something between browser and
  // replica refused WebSockets.
  await blocked.route(`${PAGE}/`, async (route) => {
    const response = await route.fetch();
    const headers = response.headers();
    headers['content-security-policy'] = headers['content-security-policy'].replace(' ws: wss:', '');
    await route.fulfill({ response, headers });
  });
  const page = await blocked.newPage();
  const driver = new PageDriver(page, 'no-websockets');
  const streams = [];
  page.on('request', (request) => {
    if (request.url().includes('/stream')) streams.push(`${request.resourceType()} ${request.headers().accept ?? ''}`);
  });
  await page.goto(`${PAGE}/#token=${TOKEN}`);
  await page.evaluate((id) => {
    location.hash = `chat=${id}`;
  }, firstChat);
  await eventually('the stream to be live', async () => (await driver.connection()) === new URL(PAGE).host);
  const script = words(40, 'x');
  await driver.send(mock({ text: script.join(' '), token_delay_ms: 20 }));
  await driver.waitDraftWords(5);
  await finishReply(driver, firstChat, script, 'the reply over the SSE fallback');
  // Tried as a WebSocket (refused), then read as server-sent events.
  const fetched = streams.filter((stream) => stream.startsWith('fetch'));
  check(fetched.length > 0 && fetched.every((stream) => stream.includes('text/event-stream')), `stream requests: ${streams}`);
  check(driver.errors.length === 0, `page errors: ${driver.errors}`);
  await blocked.close();
});

step('a dropped network: the page reconnects to the other replica with its cursor', async () => {
  const page = desktop.page;
  await page.evaluate((id) => {
    location.hash = `chat=${id}`;
  }, firstChat);
  const script = await startLongReply(desktop, 'd', { atLeast: 20 });
  await control('/cut');
  await eventually('the stream on the other replica', async () => (await desktop.connection()) === new URL(REPLICA2).host);
  await desktop.shot('20-failed-over');
  const { shown } = await finishReply(desktop, firstChat, script, 'the reply across the drop');
  check(wordsOf(shown).join(' ') === script.join(' '), 'the reply across the drop is not whole');
  // Sending goes to the other replica too (the page's own is cut).
  await desktop.send(mock({ text: 'sent while cut off' }));
  await eventually('the answer while cut off', async () => (await desktop.assistantTexts()).at(-1) === 'sent while cut off');
  await control('/restore');
});

step('the replica going away: the page moves on and the reply completes', async () => {
  const script = await startLongReply(desktop, 'g', { atLeast: 20 });
  // The page is on replica 2 now; it shuts down (its runs are handed back).
  await control('/stop/1');
  await eventually('the stream back on the page\'s own replica', async () => (await desktop.connection()) === new URL(PAGE).host);
  const { shown } = await finishReply(desktop, firstChat, script, 'the reply across the shutdown');
  check(wordsOf(shown).join(' ') === script.join(' '), 'the reply across the shutdown is not whole');
  await desktop.shot('21-replica-gone');
});

step('the replica running the reply goes away: its re-run replaces the draft', async () => {
  await control('/start');
  const script = await startLongReply(desktop, 'h', { atLeast: 20 });
  const before = await api('GET', `/chats/${firstChat}`);
  // Whichever replica runs it; when that is the page's, its origin moves on.
  await control(`/stop-worker/${firstChat}`);
  await finishReply(desktop, firstChat, script, 'the re-run reply');
  const last = (await api('GET', `/chats/${firstChat}/messages?limit=1`)).messages[0];
  check(last.generation > before.generation, `the reply was not run again (generation ${last.generation}, was ${before.generation})`);
  await desktop.shot('22-re-run');
});

// --------------------------------------------------------------------- main

async function main() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.addInitScript(INIT_SCRIPT);
  const allowed = new Set([PAGE, REPLICA1, REPLICA2].map((url) => new URL(url).host));
  const external = [];
  const tokenInUrl = [];
  browser.on('disconnected', () => {});
  context.on('request', (request) => {
    const url = new URL(request.url());
    if (url.protocol !== 'data:' && !allowed.has(url.host)) external.push(request.url());
    if (request.url().includes(TOKEN)) tokenInUrl.push(request.url());
  });
  desktop = new PageDriver(await context.newPage(), 'desktop');
  desktop.page.on('websocket', (socket) => {
    if (!allowed.has(new URL(socket.url()).host)) external.push(socket.url());
  });
  let failed = null;
  for (const { name, run } of steps) {
    const started = Date.now();
    try {
      await run();
      log(`ok   ${name} (${Date.now() - started} ms)`);
    } catch (error) {
      failed = name;
      log(`FAIL ${name}\n     ${error.stack ?? error}`);
      await desktop.shot('failed').catch(() => {});
      break;
    }
  }
  if (!failed) {
    try {
      check(external.length === 0, `requests outside the cluster: ${external}`);
      check(tokenInUrl.length === 0, `the token in URLs: ${tokenInUrl}`);
      check(desktop.errors.length === 0, `page errors: ${desktop.errors}`);
      const violations = await desktop.page.evaluate(() => window.__violations);
      check(violations.length === 0, `CSP violations: ${violations}`);
    } catch (error) {
      failed = 'the whole run';
      log(`FAIL ${error.message}`);
    }
  }
  log(`measurements ${JSON.stringify(measurements)}`);
  log(`screenshots in ${OUT}`);
  await browser.close();
  process.exit(failed ? 1 : 0);
}

main().catch((error) => {
  log(`FAIL ${error.stack ?? error}`);
  process.exit(1);
});
