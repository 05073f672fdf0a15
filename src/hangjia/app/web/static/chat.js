// The chat page: asks /v1/chat/completions with stream on, shows the answer as it arrives, the passages beside it
// (the cited ones marked; click one for its text) and the feedback widgets under it, each a POST to /v1/feedback.
// The /v1 API takes no cookie and no CSRF token: the signed-in name goes in the body's `user` field.
// No framework and nothing from a CDN; every text from the server is set with textContent, never as HTML.
"use strict";

(() => {
  const root = document.getElementById("chat");
  const t = JSON.parse(document.getElementById("labels").textContent);
  const user = root.dataset.user;
  const turns = document.getElementById("turns");
  const form = document.getElementById("ask");
  const picker = document.getElementById("model");
  const box = document.getElementById("question");
  const send = document.getElementById("send");
  const REASONS = ["wrong", "not_in_documents", "incomplete", "outdated", "unsafe"];
  const past = []; // this page's turns, sent with each question: [{role, content}, ...]

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
      const response = await fetch("/v1/feedback", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ exchange_id: exchangeId, user, ...fields }),
      });
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

  async function ask(question) {
    const answer = el("p", { class: "answer pending", text: t.thinking });
    const blocked = el("p", { class: "blocked", hidden: "" });
    const reply = el("div", { class: "reply" }, el("h2", { class: "sr-only", text: t.answer }), blocked, answer);
    const list = el("ol");
    const passages = el("aside", { class: "passages", hidden: "" }, el("h2", { text: t.sources }), list);
    turns.append(el("li", { class: "turn" }, el("p", { class: "question", text: question }), reply, passages));
    reply.scrollIntoView({ block: "nearest" });

    const messages = [...past, { role: "user", content: question }];
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: picker.value, messages, stream: true, user }),
    });
    if (!response.ok) {
      answer.className = "answer error";
      answer.textContent = t.failed.replace("{message}", await errorOf(response));
      return;
    }
    let text = "", exchangeId = null, buffer = "";
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const handle = (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message || "error");
      if (chunk.citations) {
        passages.hidden = false;
        showPassages(list, chunk.citations);
      }
      if (chunk.exchange_id != null) exchangeId = chunk.exchange_id;
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) {
          text += choice.delta.content;
          answer.className = "answer";
          answer.textContent = text;
        }
      }
      const guard = chunk.guard || (chunk.choices && chunk.choices[0] && chunk.choices[0].guard);
      if (guard && guard.passed === false && guard.reply) {
        // The answer was streamed before the guard saw it whole: say so, and show its reply instead.
        blocked.hidden = false;
        blocked.textContent = t.blocked;
        text = guard.reply;
        answer.textContent = text;
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
      answer.className = "answer error";
      answer.textContent = t.failed.replace("{message}", error.message);
      return;
    }
    answer.className = "answer";
    answer.textContent = text;
    past.push({ role: "user", content: question }, { role: "assistant", content: text });
    reply.append(exchangeId == null ? el("p", { class: "feedback status", text: t.no_record })
      : feedbackWidgets(exchangeId, answer));
    root.dataset.turns = String(past.length / 2); // for tests and scripts: how many answers are complete
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
  loadModels();
})();
