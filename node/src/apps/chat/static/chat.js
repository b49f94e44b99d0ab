// Corral chat page: joins a room, sends and shows messages, and shows which node and which
// transport this browser is on. All text goes through textContent, never innerHTML.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const socket = io({ transports: params.get("transports")?.split(",") ?? ["polling", "websocket"] });

let me = null; // { nickname, room } once joined
let typingTimer = null;
const typists = new Map();

function setState(state) {
  $("state").textContent = state;
  $("state").dataset.state = state;
}

function showTransport() {
  $("transport").textContent = socket.io.engine?.transport?.name ?? "?";
}

function add(text, cls, who, time) {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  if (who) {
    const span = document.createElement("span");
    span.className = "who";
    span.textContent = who;
    li.append(span);
  }
  li.append(document.createTextNode(text));
  if (time) {
    const t = document.createElement("time");
    const date = new Date(time);
    t.dateTime = date.toISOString();
    t.textContent = date.toLocaleTimeString();
    li.append(t);
  }
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
}

function join() {
  socket.emit("join", me, (reply) => {
    if (reply?.error) {
      add(reply.error, "notice");
      return;
    }
    $("room").textContent = reply.room;
    $("members").textContent = `· ${reply.members} here`;
    $("send").hidden = false;
    $("input").focus();
  });
}

socket.on("connect", () => {
  setState("connected");
  showTransport();
  // A reconnect opens a new engine; watch its upgrade too.
  socket.io.engine.on("upgrade", showTransport);
  if (me) join();
});
socket.on("disconnect", (reason) => {
  setState("disconnected");
  add(`disconnected (${reason}), reconnecting…`, "notice");
});
socket.on("connect_error", () => setState("disconnected"));
socket.on("welcome", ({ node }) => { $("node").textContent = node; });

socket.on("chat message", ({ nickname, text, time }) => add(text, null, nickname, time));
socket.on("user joined", ({ nickname, members }) => {
  add(`${nickname} joined`, "notice");
  $("members").textContent = `· ${members} here`;
});
socket.on("user left", ({ nickname, members }) => {
  add(`${nickname} left`, "notice");
  $("members").textContent = `· ${members} here`;
  typists.delete(nickname);
  renderTyping();
});
socket.on("typing", ({ nickname, typing }) => {
  if (typing) typists.set(nickname, Date.now());
  else typists.delete(nickname);
  renderTyping();
});

function renderTyping() {
  const names = [...typists.keys()];
  $("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}

$("join").addEventListener("submit", (e) => {
  e.preventDefault();
  me = { nickname: $("nickname").value.trim(), room: $("room-name").value.trim() || "lobby" };
  $("messages").replaceChildren();
  join();
});

$("send").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text) return;
  $("input").value = "";
  add(text, "mine", me.nickname, Date.now());
  socket.emit("chat message", text, (reply) => {
    if (reply?.error) add(`not sent: ${reply.error}`, "notice");
  });
  socket.emit("typing", false);
  clearTimeout(typingTimer);
  typingTimer = null;
});

$("input").addEventListener("input", () => {
  if (!typingTimer) socket.emit("typing", true);
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => {
    socket.emit("typing", false);
    typingTimer = null;
  }, 1500);
});

if (params.get("nickname")) {
  $("nickname").value = params.get("nickname");
  $("room-name").value = params.get("room") ?? "";
  $("join").requestSubmit();
}
