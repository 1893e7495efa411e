// One chat as the page knows it: committed messages, the drafts of the
// steps in progress, status, queue, and the stream cursor. No DOM here:
// `apply` takes a stream event (DESIGN §6) and says what changed.
//
// The rules that keep the visible text exact across reconnects and reloads:
// - a message is known once, by id;
// - a part at or before the cursor `(generation, seq)` was already applied;
// - a message of step k of generation G replaces the draft of (G, k), and
//   later parts of steps up to k are ignored;
// - a status of a newer generation drops every older draft (a re-run after
//   recovery starts a clean draft); a retry drops the step in progress;
// - a status that leaves `running` ends the drafts of its generation (an
//   interrupted step's partial output arrives as a message first).

/** The part cursor `{generation, seq}` ordering. */
function after(a, b) {
  return a.generation > b.generation || (a.generation === b.generation && a.seq > b.seq);
}

export class Conversation {
  constructor(chatId) {
    this.chatId = chatId;
    /** Committed messages by id. */
    this.messages = new Map();
    /** True when older messages exist before the oldest one loaded. */
    this.hasMore = false;
    this.status = null;
    this.generation = 0;
    this.queue = [];
    /** Drafts by `${generation}:${step}`: {generation, step, blocks}. */
    this.drafts = new Map();
    /** The newest committed step of each generation. */
    this.committedStep = new Map();
    /** The last retry notice of the run in progress, until it goes on. */
    this.retry = null;
    /** The last `error` event of the stream. */
    this.error = null;
    this.title = null;
    this.cursor = { afterMessageId: 0, afterPart: null };
  }

  /** Messages in id order. */
  orderedMessages() {
    return [...this.messages.values()].sort((a, b) => a.id - b.id);
  }

  /** Drafts in (generation, step) order. */
  orderedDrafts() {
    return [...this.drafts.values()].sort((a, b) => a.generation - b.generation || a.step - b.step);
  }

  /** The oldest loaded message's id (the `before_id` of the next older page). */
  oldestId() {
    let oldest = null;
    for (const id of this.messages.keys()) if (oldest === null || id < oldest) oldest = id;
    return oldest;
  }

  /**
   * Adds a page of history (`GET /messages`). Its messages move the cursor
   * too: the stream then starts after them instead of replaying the chat.
   */
  addPage(page) {
    for (const message of page.messages) this.addMessage(message);
    this.hasMore = page.has_more;
  }

  /**
   * Replaces the history with the newest page (an edit rewrote it). Messages
   * newer than the page stay: the stream delivered them after the page was
   * read, and will not again.
   */
  resetHistory(page) {
    const newest = page.messages.length ? page.messages[page.messages.length - 1].id : Infinity;
    for (const id of [...this.messages.keys()]) if (id <= newest) this.messages.delete(id);
    this.addPage(page);
  }

  /** The stream query for the next connection. */
  query() {
    const query = {};
    if (this.cursor.afterMessageId > 0) query.after_message_id = String(this.cursor.afterMessageId);
    if (this.cursor.afterPart) {
      query.after_part = `${this.cursor.afterPart.generation}.${this.cursor.afterPart.seq}`;
    }
    return query;
  }

  addMessage(message) {
    if (message.id > this.cursor.afterMessageId) this.cursor.afterMessageId = message.id;
    if (this.messages.has(message.id)) return false;
    this.messages.set(message.id, message);
    if (message.generation != null && message.step != null) {
      const done = this.committedStep.get(message.generation) ?? -1;
      if (message.step > done) this.committedStep.set(message.generation, message.step);
      for (const [key, draft] of this.drafts) {
        if (draft.generation === message.generation && draft.step <= message.step) this.drafts.delete(key);
      }
    }
    return true;
  }

  dropDrafts(keep) {
    let dropped = false;
    for (const [key, draft] of this.drafts) {
      if (!keep(draft)) {
        this.drafts.delete(key);
        dropped = true;
      }
    }
    return dropped;
  }

  /**
   * Applies one stream event. Returns what changed: a set of
   * 'messages' | 'drafts' | 'status' | 'queue' | 'notice' | 'title' | 'refresh'.
   */
  apply(event) {
    const changed = new Set();
    switch (event.type) {
      case 'status':
        this.applyStatus(event, changed);
        break;
      case 'part':
        this.applyPart(event, changed);
        break;
      case 'message':
        if (this.addMessage(event.message)) changed.add('messages').add('drafts');
        if (this.retry) {
          this.retry = null;
          changed.add('notice');
        }
        break;
      case 'queue':
        this.queue = event.queued;
        changed.add('queue');
        break;
      case 'retry':
        if (event.generation < this.generation) break;
        // The step in progress starts over.
        this.dropDrafts((draft) => draft.generation !== event.generation || this.isCommitted(draft));
        this.retry = event;
        changed.add('drafts').add('notice');
        break;
      case 'error':
        this.error = event.error;
        changed.add('notice');
        break;
      case 'title':
        this.title = event.title;
        changed.add('title');
        break;
      case 'refresh':
        changed.add('refresh');
        break;
      default:
        // `reconnect` is the connection's business; unknown types are
        // newer servers' additions.
        break;
    }
    return changed;
  }

  isCommitted(draft) {
    return draft.step <= (this.committedStep.get(draft.generation) ?? -1);
  }

  applyStatus(event, changed) {
    if (event.generation < this.generation) return;
    if (event.generation > this.generation) {
      this.dropDrafts((draft) => draft.generation >= event.generation);
      this.generation = event.generation;
      changed.add('drafts');
    }
    if (event.status !== 'running') {
      if (this.dropDrafts((draft) => draft.generation > event.generation)) changed.add('drafts');
    }
    if (event.status !== this.status) {
      this.status = event.status;
      this.retry = null;
      if (event.status === 'running' || event.status === 'pending') this.error = null;
      changed.add('status').add('notice');
    }
  }

  applyPart(event, changed) {
    const position = { generation: event.generation, seq: event.seq };
    if (event.generation < this.generation) return;
    if (this.cursor.afterPart && !after(position, this.cursor.afterPart)) return;
    this.cursor.afterPart = position;
    if ((this.committedStep.get(event.generation) ?? -1) >= event.step) return;
    if (event.generation > this.generation) {
      this.dropDrafts((draft) => draft.generation >= event.generation);
      this.generation = event.generation;
      this.status = 'running';
      changed.add('status');
    }
    const key = `${event.generation}:${event.step}`;
    let draft = this.drafts.get(key);
    if (!draft) {
      draft = { generation: event.generation, step: event.step, blocks: [] };
      this.drafts.set(key, draft);
    }
    addToDraft(draft, event.part);
    if (this.retry) {
      this.retry = null;
      changed.add('notice');
    }
    changed.add('drafts');
  }
}

/** Folds one part or delta into a draft's blocks (parts in the making). */
export function addToDraft(draft, part) {
  const blocks = draft.blocks;
  const last = blocks[blocks.length - 1];
  switch (part.type) {
    case 'text_delta':
      if (last && last.type === 'text') last.text += part.text;
      else blocks.push({ type: 'text', text: part.text });
      break;
    case 'reasoning_delta':
      if (last && last.type === 'reasoning') last.text += part.text;
      else blocks.push({ type: 'reasoning', text: part.text });
      break;
    case 'tool_call_delta': {
      const call = blocks.find((block) => block.type === 'tool_call' && block.id === part.id);
      if (call) call.args_text = (call.args_text ?? '') + part.args_delta;
      else blocks.push({ type: 'tool_call', id: part.id, name: part.name, args_text: part.args_delta });
      break;
    }
    case 'tool_call': {
      const index = blocks.findIndex((block) => block.type === 'tool_call' && block.id === part.id);
      if (index >= 0) blocks[index] = { ...part };
      else blocks.push({ ...part });
      break;
    }
    default:
      blocks.push({ ...part });
  }
}
