// Contrastive front end: plain JS, no network access beyond this server's /api.
"use strict";

const TEXT = {
  en: {
    title: "Contrastive", subtitle: "Search images by text or by image, and classify any image zero-shot.",
    placeholder: "Describe an image, e.g. a big red circle left of a small blue square", results: "Results",
    search: "Search", drop: "Drop an image here, or", choose: "choose a file", zeroShot: "Zero-shot classification",
    zeroShotHelp: "Uses the uploaded image. Edit the labels (comma-separated) and classify.",
    templates: "Prompt templates (one per line, {} = label)", classify: "Classify", searching: "Searching…",
    found: (n) => `${n} results`, needImage: "Upload an image first.", items: (n) => `${n} images indexed`,
    score: "score", other: "中文",
  },
  zh: {
    title: "Contrastive 图文互检", subtitle: "用文字或图片检索图片，并对任意图片做零样本分类。",
    placeholder: "描述一张图片，例如：a big red circle left of a small blue square", results: "结果数",
    search: "检索", drop: "把图片拖到这里，或", choose: "选择文件", zeroShot: "零样本分类",
    zeroShotHelp: "使用已上传的图片。编辑标签（逗号分隔）后点击分类。",
    templates: "提示模板（每行一个，{} 代表标签）", classify: "分类", searching: "检索中…",
    found: (n) => `共 ${n} 条结果`, needImage: "请先上传一张图片。", items: (n) => `已索引 ${n} 张图片`,
    score: "相似度", other: "English",
  },
};

let lang = localStorage.getItem("lang") || (navigator.language.startsWith("zh") ? "zh" : "en");
let uploaded = null;  // the last uploaded File, reused by zero-shot classification
const $ = (id) => document.getElementById(id);

function t(key, ...args) {
  const value = TEXT[lang][key];
  return typeof value === "function" ? value(...args) : value;
}

function applyLanguage() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
  $("lang").textContent = t("other");
  refreshHealth();
}

async function call(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
    throw new Error(detail || `HTTP ${response.status}`);
  }
  return body;
}

function showResults(results) {
  const grid = $("results");
  grid.replaceChildren();
  for (const item of results) {
    const card = document.createElement("figure");
    card.className = "result";
    const img = document.createElement("img");
    img.src = item.thumbnail;
    img.alt = item.captions[0] || item.file;
    img.loading = "lazy";
    const caption = document.createElement("figcaption");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `${t("score")} ${item.score.toFixed(3)}`;
    const text = document.createElement("span");
    text.className = "caption";
    text.textContent = item.captions[0] || item.file;
    text.title = item.captions.join("\n");
    caption.append(score, text);
    card.append(img, caption);
    grid.append(card);
  }
  $("status").textContent = t("found", results.length);
}

async function run(task) {
  $("status").textContent = t("searching");
  $("status").classList.remove("error");
  try {
    await task();
  } catch (error) {
    $("status").textContent = error.message;
    $("status").classList.add("error");
  }
}

$("text-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = $("query").value.trim();
  if (!q) return;
  run(async () => {
    const params = new URLSearchParams({ q, k: $("k").value || "12" });
    showResults((await call(`/api/search/text?${params}`)).results);
  });
});

function searchByImage(file) {
  uploaded = file;
  const preview = $("query-image");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  run(async () => {
    const form = new FormData();
    form.append("image", file);
    form.append("k", $("k").value || "12");
    showResults((await call("/api/search/image", { method: "POST", body: form })).results);
  });
}

$("upload").addEventListener("change", (event) => {
  if (event.target.files.length) searchByImage(event.target.files[0]);
});
const zone = $("drop-zone");
["dragenter", "dragover"].forEach((name) => zone.addEventListener(name, (event) => {
  event.preventDefault();
  zone.classList.add("dragging");
}));
["dragleave", "drop"].forEach((name) => zone.addEventListener(name, () => zone.classList.remove("dragging")));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  if (event.dataTransfer.files.length) searchByImage(event.dataTransfer.files[0]);
});

$("classify-button").addEventListener("click", () => {
  const list = $("classify-results");
  if (!uploaded) {
    list.replaceChildren();
    $("status").textContent = t("needImage");
    return;
  }
  run(async () => {
    const form = new FormData();
    form.append("image", uploaded);
    form.append("labels", $("labels").value);
    if ($("templates").value.trim()) form.append("templates", $("templates").value);
    const body = await call("/api/classify", { method: "POST", body: form });
    list.replaceChildren(...body.labels.map(({ label, probability }) => {
      const row = document.createElement("li");
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.round(probability * 100)}%`;
      const text = document.createElement("span");
      text.textContent = `${label} — ${(probability * 100).toFixed(1)}%`;
      row.append(bar, text);
      return row;
    }));
    $("status").textContent = "";
  });
});

async function refreshHealth() {
  try {
    const health = await call("/api/health");
    $("health").textContent = `${t("items", health.items)} · ${health.encoder} · ${health.search}`;
  } catch (error) {
    $("health").textContent = error.message;
  }
}

$("lang").addEventListener("click", () => {
  lang = lang === "en" ? "zh" : "en";
  localStorage.setItem("lang", lang);
  applyLanguage();
});

applyLanguage();
