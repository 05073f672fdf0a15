// The chat page: asks /chat/completions (the web app's door to the /v1 chat code, which records the signed-in user;
// app/web/conversations.py) with stream on, shows the answer as it arrives, the passages beside it (the cited ones
// marked; click one for its text) and the feedback widgets under it, each a POST to /chat/feedback. Every POST carries
// the session's CSRF token. The sidebar lists the user's conversations: one reopens with its answers, passages and
// widgets, and goes on from there. "Two drafts" asks twice and shows both answers side by side until one is picked.
// No framework and nothing from a CDN; every text from the server is set with textContent, never as HTML.
"use strict";

(() => {
  const root = document.getElementById("chat");
  const t = JSON.parse(document.getElementById("labels").textContent);
  const csrf = root.dataset.csrf;
  const turns = document.getElementById("turns");
  const form = document.getElementById("ask");
  const picker = document.getElementById("model");
  const box = document.getElementById("question");
  const send = document.getElementById("send");
  const twoDrafts = document.getElementById("drafts");
  const sidebar = document.getElementById("conversations");
  const noConversations = document.getElementById("no-conversations");
  const REASONS = ["wrong", "not_in_documents", "incomplete", "outdated", "unsafe"];
  let past = []; // the open conversation's turns, sent with each question: [{question, answer}, ...]
  let conversationId = null;

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  async function errorOf(response) {
    try {
      const body = await response.json();
      return (body.error && body.error.message) || body.detail || response.statusText;
    } catch {
      return `${response.status} ${response.statusText}`;
    }
  }

  function postJSON(path, body) {
    return fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
  }

  function messagesFor(question) {
    return [...past.flatMap((p) => [{ role: "user", content: p.question }, { role: "assistant", content: p.answer }]),
      { role: "user", content: question }];
  }

  function countTurns() {
    root.dataset.turns = String(past.length); // for tests and scripts: how many answers are complete
  }

  async function loadModels() {
    const response = await fetch("/v1/models");
    const names = response.ok ? (await response.json()).data.map((m) => m.id) : [];
    for (const name of names) picker.append(el("option", { value: name, text: name }));
    picker.value = names.includes("domain") ? "domain" : names.includes("base") ? "base" : names[0] || "";
  }

  // Passages beside an answer; called again when the finishing chunk says which were cited.
  function showPassages(list, citations) {
    list.replaceChildren();
    if (!citations.length) list.append(el("li", { class: "none", text: t.no_sources }));
    for (const c of citations) {
      const where = [c.section, c.page == null ? null : t.page.replace("{page}", c.page)].filter(Boolean).join(" · ");
      const text = el("blockquote", { class: "passage-text", text: c.text, hidden: "" });
      const button = el(
        "button",
        { type: "button", class: "citation" + (c.cited ? " cited" : ""), "aria-expanded": "false",
          "data-index": c.index,
          onclick: () => {
            const open = text.hidden;
            text.hidden = !open;
            button.setAttribute("aria-expanded", String(open));
          } },
        el("span", { class: "n", text: `[${c.index}] ` }),
        el("span", { class: "source", text: c.source }),
        el("span", { class: "where", text: where ? ` · ${where}` : "" }),
        el("span", { class: "where", text: ` · ${t.score} ${Number(c.score).toFixed(2)}` }),
        el("span", { class: "badge", text: t.cited }),
      );
      list.append(el("li", {}, button, text));
    }
  }

  // Thumbs with a reason, a 1-5 rating, a correction: each a POST to /v1/feedback, the outcome said inline.
  function feedbackWidgets(exchangeId, answerNode) {
    const status = el("span", { class: "status", role: "status" });
    async function post(fields) {
      status.className = "status";
      status.textContent = "…";
      const response = await postJSON("/chat/feedback", { exchange_id: exchangeId, ...fields });
      if (response.ok) {
        status.textContent = t.thanks;
        return true;
      }
      status.className = "status error";
      status.textContent = t.failed.replace("{message}", await errorOf(response));
      return false;
    }

    const reason = el("select", { class: "reason", "aria-label": t.why },
      ...REASONS.map((r) => el("option", { value: r, text: t[`reason_${r}`] })));
    const reasons = el("span", { class: "reasons", hidden: "" }, el("span", { text: t.why }), reason,
      el("button", { type: "button", class: "send-reason", text: t.send,
        onclick: async () => { if (await post({ kind: "thumbs", thumbs: false, reason: reason.value })) reasons.hidden = true; } }));
    // Words, not emoji: a machine without an emoji font (Debian's chromium alone) would show empty boxes.
    const up = el("button", { type: "button", class: "quiet thumbs-up", "aria-pressed": "false", text: `▲ ${t.helpful}`,
      onclick: () => { press(up); reasons.hidden = true; post({ kind: "thumbs", thumbs: true }); } });
    const down = el("button", { type: "button", class: "quiet thumbs-down", "aria-pressed": "false",
      text: `▼ ${t.not_helpful}`,
      onclick: () => { press(down); reasons.hidden = false; status.textContent = ""; } });
    function press(button) {
      for (const b of [up, down]) b.setAttribute("aria-pressed", String(b === button));
    }

    const stars = el("span", { class: "rating", role: "group", "aria-label": t.rate }, el("span", { text: t.rate }));
    for (let n = 1; n <= 5; n++) {
      const star = el("button", { type: "button", class: "quiet", "data-rating": n, "aria-pressed": "false",
        text: String(n),
        onclick: () => {
          for (const s of stars.querySelectorAll("button")) s.setAttribute("aria-pressed", String(s === star));
          post({ kind: "rating", rating: n });
        } });
      stars.append(star);
    }

    const edited = el("textarea", { rows: "4", class: "corrected", "aria-label": t.correct });
    const correction = el("span", { class: "correction", hidden: "" }, edited,
      el("button", { type: "button", class: "submit-correction", text: t.submit_correction,
        onclick: async () => {
          if (edited.value.trim() && (await post({ kind: "correction", corrected_answer: edited.value }))) {
            correction.hidden = true;
          }
        } }));
    const correct = el("button", { type: "button", class: "quiet correct", text: t.correct,
      onclick: () => {
        if (correction.hidden) edited.value = answerNode.textContent;
        correction.hidden = !correction.hidden;
      } });

    return el("div", { class: "feedback" }, up, down, reasons, stars, correct, status, correction);
  }

  // One answer's place: the reply (the guard's note, the text, then the feedback) and the passages beside it.
  function answerView() {
    const answer = el("p", { class: "answer pending", text: t.thinking });
    const blocked = el("p", { class: "blocked", hidden: "" });
    const reply = el("div", { class: "reply" }, el("h2", { class: "sr-only", text: t.answer }), blocked, answer);
    const list = el("ol");
    const passages = el("aside", { class: "passages", hidden: "" }, el("h2", { text: t.sources }), list);
    return { answer, blocked, reply, list, passages, text: "", exchangeId: null };
  }

  // A stored answer, as a reopened conversation shows it.
  function fill(view, stored) {
    view.answer.className = "answer";
    view.answer.textContent = view.text = stored.answer;
    view.exchangeId = stored.exchange_id;
    if (stored.citations && stored.citations.length) {
      view.passages.hidden = false;
      showPassages(view.list, stored.citations);
    }
  }

  function withFeedback(view) {
    view.reply.append(view.exchangeId == null ? el("p", { class: "feedback status", text: t.no_record })
      : feedbackWidgets(view.exchangeId, view.answer));
  }

  function failed(view, message) {
    view.answer.className = "answer error";
    view.answer.textContent = t.failed.replace("{message}", message);
  }

  function turnNode(question) {
    const li = el("li", { class: "turn" }, el("p", { class: "question", text: question }));
    turns.append(li);
    return li;
  }

  // POST one question; the response once its headers are in (a new conversation's id is one), else null.
  async function request(body, view) {
    const response = await postJSON("/chat/completions",
      { model: picker.value, stream: true, conversation_id: conversationId, ...body });
    if (!response.ok) {
      failed(view, await errorOf(response));
      return null;
    }
    const id = response.headers.get("X-Conversation-Id");
    if (id && conversationId == null) {
      conversationId = Number(id);
      showConversation();
    }
    return response;
  }

  // The answer's stream read into `view`; true when it ended well.
  async function read(response, view) {
    let buffer = "";
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const handle = (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message || "error");
      if (chunk.citations) {
        view.passages.hidden = false;
        showPassages(view.list, chunk.citations);
      }
      if (chunk.exchange_id != null) view.exchangeId = chunk.exchange_id;
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) {
          view.text += choice.delta.content;
          view.answer.className = "answer";
          view.answer.textContent = view.text;
        }
      }
      const guard = chunk.guard || (chunk.choices && chunk.choices[0] && chunk.choices[0].guard);
      if (guard && guard.passed === false && guard.reply) {
        // The answer was streamed before the guard saw it whole: say so, and show its reply instead.
        view.blocked.hidden = false;
        view.blocked.textContent = t.blocked;
        view.text = guard.reply;
        view.answer.textContent = view.text;
      }
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const lines = buffer.split("\n");
        buffer = lines.pop(); // a line cut between two reads waits for its end
        for (const line of lines) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data && data !== "[DONE]") handle(JSON.parse(data));
        }
      }
    } catch (error) {
      failed(view, error.message);
      return false;
    }
    view.answer.className = "answer";
    view.answer.textContent = view.text;
    return true;
  }

  async function ask(question) {
    const messages = messagesFor(question);
    const li = turnNode(question);
    if (twoDrafts.checked) return askDrafts(li, question, messages);
    const view = answerView();
    li.append(view.reply, view.passages);
    view.reply.scrollIntoView({ block: "nearest" });
    const response = await request({ messages }, view);
    if (!response || !(await read(response, view))) return;
    past.push({ question, answer: view.text });
    withFeedback(view);
    countTurns();
    loadConversations();
  }

  // Two drafts side by side, each with a button to keep it; the pick is a preference (chosen over rejected), and the
  // chosen draft stays as the turn's answer. Returns the function that lets the user pick.
  function showDrafts(li, views, entry) {
    li.classList.add("drafting");
    const note = el("p", { class: "pick-first", text: t.pick_first, hidden: "" });
    const columns = views.map((view, i) => {
      view.pick = el("button", { type: "button", class: "pick", disabled: "", text: t.pick, onclick: () => choose(i) });
      return el("div", { class: "draft", "data-draft": String(i) },
        el("h3", { text: t.draft.replace("{n}", i + 1) }), view.reply, view.passages, view.pick);
    });
    li.append(el("div", { class: "drafts" }, ...columns), note);

    async function choose(i) {
      const [chosen, rejected] = [views[i], views[1 - i]];
      for (const view of views) view.pick.disabled = true;
      const response = await postJSON("/chat/feedback", { kind: "preference", exchange_id: views[0].exchangeId,
        chosen_exchange_id: chosen.exchangeId, rejected_exchange_id: rejected.exchangeId });
      if (!response.ok) {
        note.className = "pick-first error";
        note.textContent = t.failed.replace("{message}", await errorOf(response));
        for (const view of views) view.pick.disabled = false;
        return;
      }
      entry.answer = chosen.text;
      li.classList.remove("drafting");
      li.replaceChildren(li.querySelector(".question"), chosen.reply, chosen.passages);
      withFeedback(chosen);
    }

    return () => {
      if (views.some((view) => view.exchangeId == null)) {
        note.textContent = t.no_record;
      } else {
        for (const view of views) view.pick.disabled = false;
      }
      note.hidden = false;
    };
  }

  async function askDrafts(li, question, messages) {
    const seed = Math.floor(Math.random() * 2 ** 30);
    const views = [answerView(), answerView()];
    const entry = { question, answer: "" };
    const ready = showDrafts(li, views, entry);
    li.scrollIntoView({ block: "nearest" });
    // The first draft's request makes the conversation when it is new; the second goes to the same one.
    const first = await request({ messages, draft: 0, seed }, views[0]);
    if (!first) return;
    const second = request({ messages, draft: 1, seed }, views[1]);
    const done = await Promise.all([read(first, views[0]), second.then((response) => response && read(response, views[1]))]);
    if (!done.every(Boolean)) return;
    entry.answer = views[0].text; // until the other one is picked
    past.push(entry);
    ready();
    countTurns();
    loadConversations();
  }

  // The sidebar: the user's conversations, newest first, the open one marked.
  function linkTo(id) {
    const url = new URL(window.location.href);
    if (id == null) url.searchParams.delete("c");
    else url.searchParams.set("c", id);
    return url.pathname + url.search;
  }

  function showConversation() {
    window.history.replaceState(null, "", linkTo(conversationId));
    for (const link of sidebar.querySelectorAll("a")) {
      if (Number(link.dataset.id) === conversationId) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  async function loadConversations() {
    const response = await fetch("/chat/conversations");
    const list = response.ok ? await response.json() : [];
    sidebar.replaceChildren(...list.map((c) => el("li", {}, el("a", {
      href: linkTo(c.id), class: "conversation", "data-id": String(c.id), text: c.title || "…", title: c.title,
      onclick: (event) => {
        event.preventDefault();
        openConversation(c.id);
      },
    }))));
    noConversations.hidden = list.length > 0;
    showConversation();
  }

  function newChat() {
    conversationId = null;
    past = [];
    turns.replaceChildren();
    countTurns();
    showConversation();
    box.focus();
  }

  async function openConversation(id) {
    newChat();
    const response = await fetch(`/chat/conversations/${encodeURIComponent(id)}`);
    if (!response.ok) {
      turns.append(el("li", { class: "turn missing", text: t.no_conversation }));
      return;
    }
    const data = await response.json();
    conversationId = data.id;
    for (const turn of data.turns) {
      const li = turnNode(turn.question);
      if (turn.drafts) {
        const views = turn.drafts.map((stored) => {
          const view = answerView();
          fill(view, stored);
          return view;
        });
        const entry = { question: turn.question, answer: views[0].text };
        past.push(entry);
        showDrafts(li, views, entry)();
      } else {
        const view = answerView();
        fill(view, turn);
        li.append(view.reply, view.passages);
        withFeedback(view);
        past.push({ question: turn.question, answer: turn.answer });
      }
    }
    countTurns();
    showConversation();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = box.value.trim();
    if (!question) return;
    box.value = "";
    send.disabled = true;
    try {
      await ask(question);
    } finally {
      send.disabled = false;
      box.focus();
    }
  });
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) form.requestSubmit(); // IME: Chinese input
  });
  document.getElementById("new-chat").addEventListener("click", newChat);
  loadModels();
  const asked = new URLSearchParams(window.location.search).get("c");
  if (asked) openConversation(asked);
  loadConversations();
})();
