// The SALIENCY tab of TensorBoard (lightning-saliency). TensorBoard loads this ES module in an iframe whose base URL
// is /data/plugin/saliency/ and calls render(). No build step, no dependency, nothing fetched from elsewhere: the
// routes are the plugin's (lightning_saliency/tensorboard/plugin.py). Maps arrive as 8-bit grayscale PNGs and are
// coloured (the colormap's lookup table comes from the /colormaps route) and blended over the probe image here.

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];
const MODES = [
  ['overlay', 'Overlay'],
  ['heat', 'Heat'],
  ['input', 'Input'],
];
const SIZES = [
  [112, 'S'],
  [144, 'M'],
  [192, 'L'],
  [256, 'XL'],
];
const LABEL_WIDTH = 132; // the method column of the matrix, px
const GAP = 6; // between cells, px

const state = {
  runs: [],
  legacy: [],
  run: null,
  prefix: null,
  probe: null, // /probe answer
  image: 0,
  mode: 'overlay',
  size: 144,
  start: null, // first column shown (null: the latest page)
  spread: false, // columns spread over the whole training instead of consecutive
  matrix: null, // /matrix answer
  scores: null, // /scores answer
  lut: {}, // colormap name -> Uint8Array(768)
  formatVersion: null, // the newest storage format the plugin reads
  token: 0, // increases on every new selection, so late answers of an older one are dropped
};
const bitmaps = new Map(); // url -> Promise<ImageBitmap>
let els = {};
let observer = null;
let lightbox = null; // {method, column} shown enlarged

export async function render() {
  document.title = 'Saliency';
  const link = document.createElement('link');
  link.rel = 'stylesheet';
  link.href = './style.css';
  document.head.appendChild(link);
  buildSkeleton();
  try {
    const maps = await getJSON('colormaps');
    for (const [name, hex] of Object.entries(maps)) state.lut[name] = hexBytes(hex);
    await loadRuns();
  } catch (error) {
    showMessage('The Saliency tab could not load its data.', [errorText(error)]);
  }
}

// ------------------------------------------------------------------ data

function url(path, params = {}) {
  return `./${path}?${new URLSearchParams(params)}`;
}

async function getJSON(path, params) {
  const response = await fetch(url(path, params));
  if (!response.ok) throw new Error((await response.text()) || `HTTP ${response.status}`);
  return response.json();
}

function loadBitmap(src) {
  if (!bitmaps.has(src)) {
    bitmaps.set(
      src,
      (async () => {
        const response = await fetch(src);
        if (!response.ok) throw new Error((await response.text()) || `HTTP ${response.status}`);
        const blob = await response.blob();
        try {
          return await createImageBitmap(blob);
        } catch (error) {
          throw new Error('the stored image could not be decoded (corrupt data)');
        }
      })(),
    );
  }
  return bitmaps.get(src);
}

function hexBytes(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}

function errorText(error) {
  return String((error && error.message) || error).replace(/^\s+|\s+$/g, '');
}

function mapUrl(method, step, image = state.image) {
  return url('map', {run: state.run, prefix: state.prefix, method, image, step});
}

function imageUrl(step, image = state.image) {
  const params = {run: state.run, prefix: state.prefix, image};
  if (step !== null && step !== undefined) params.step = step;
  return url('image', params);
}

// ------------------------------------------------------------------ layout

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children.flat()) if (child) node.append(child);
  return node;
}

function buildSkeleton() {
  els.run = el('select', {id: 'run', 'aria-label': 'run', onchange: () => selectRun(els.run.value)});
  els.prefix = el('select', {id: 'prefix', 'aria-label': 'prefix', onchange: () => selectPrefix(els.prefix.value)});
  els.modes = el(
    'div',
    {class: 'segmented', role: 'group', 'aria-label': 'show'},
    MODES.map(([mode, label]) =>
      el('button', {type: 'button', 'data-mode': mode, text: label, onclick: () => setMode(mode)}),
    ),
  );
  els.sizes = el(
    'div',
    {class: 'segmented', role: 'group', 'aria-label': 'cell size'},
    SIZES.map(([size, label]) =>
      el('button', {type: 'button', 'data-size': size, text: label, title: `${size} px`, onclick: () => setSize(size)}),
    ),
  );
  els.prev = el('button', {type: 'button', class: 'icon', title: 'earlier epochs', text: '◀', onclick: () => page(-1)});
  els.next = el('button', {type: 'button', class: 'icon', title: 'later epochs', text: '▶', onclick: () => page(1)});
  els.range = el('span', {class: 'range'});
  els.spread = el('input', {type: 'checkbox', id: 'spread', onchange: () => setSpread(els.spread.checked)});
  const reload = el('button', {type: 'button', class: 'icon', title: 'reload the data', text: '↻', onclick: reloadAll});
  els.bar = el(
    'header',
    {class: 'bar'},
    el('label', {}, 'Run ', els.run),
    el('label', {}, 'Prefix ', els.prefix),
    el('span', {class: 'group'}, el('span', {class: 'caption', text: 'Show'}), els.modes),
    el('span', {class: 'group'}, el('span', {class: 'caption', text: 'Size'}), els.sizes),
    el(
      'span',
      {class: 'group pager'},
      els.prev,
      els.range,
      els.next,
      el('label', {class: 'check', title: 'columns evenly spread from the first to the last logged epoch'}, els.spread, 'spread'),
    ),
    reload,
  );
  els.notice = el('div', {class: 'notice', hidden: true});
  els.thumbs = el('nav', {class: 'thumbs', 'aria-label': 'probe images'});
  els.matrix = el('section', {class: 'matrix-wrap', 'aria-label': 'maps'});
  els.side = el('aside', {class: 'side'});
  els.main = el('div', {class: 'main'}, els.matrix, els.side);
  els.content = el('div', {class: 'content', hidden: true}, els.thumbs, els.main);
  els.message = el('div', {id: 'message', class: 'message', hidden: true});
  els.lightbox = el('div', {class: 'lightbox', hidden: true, onclick: (e) => e.target === els.lightbox && closeLightbox()});
  document.body.append(el('div', {class: 'app'}, els.bar, els.notice, els.message, els.content, els.lightbox));
  updateToggles();
  let timer = null;
  window.addEventListener('resize', () => {
    clearTimeout(timer);
    timer = setTimeout(() => state.probe && loadMatrix(), 200);
  });
  document.addEventListener('keydown', onKey);
}

function showMessage(title, lines = []) {
  els.message.replaceChildren(el('h2', {text: title}), ...lines.map((line) => (typeof line === 'string' ? el('p', {text: line}) : line)));
  els.message.hidden = false;
  els.content.hidden = true;
}

function hideMessage() {
  els.message.hidden = true;
  els.content.hidden = false;
}

function updateToggles() {
  for (const b of els.modes.children) b.classList.toggle('on', b.dataset.mode === state.mode);
  for (const b of els.sizes.children) b.classList.toggle('on', Number(b.dataset.size) === state.size);
  els.spread.checked = state.spread;
}

// ------------------------------------------------------------------ selection

async function loadRuns() {
  const answer = await getJSON('runs');
  state.runs = answer.runs;
  state.legacy = answer.legacy;
  state.formatVersion = answer.format_version;
  if (!state.runs.length) {
    els.bar.classList.add('empty');
    const lines = [
      'No run in this log directory holds data for the Saliency tab.',
      'The tab shows what SaliencyMonitor (lightning-saliency) writes to a TensorBoardLogger at every logged ' +
        'epoch, from the release that added this tab on. Logs written before it, or by other tools, have no such data.',
    ];
    if (state.legacy.length) {
      lines.push(
        el(
          'p',
          {},
          'These runs have the monitor’s grids but no tab data (logged before the tab existed): ',
          el('b', {text: state.legacy.map((l) => `${l.run} (${l.prefix})`).join(', ')}),
          '. See them in the IMAGES tab (',
          el('code', {text: `${state.legacy[0].prefix}/overview`}),
          '), or train again with a current lightning-saliency to see them here.',
        ),
      );
    }
    showMessage('No Saliency data', lines);
    return;
  }
  els.bar.classList.remove('empty');
  els.run.replaceChildren(...state.runs.map((r) => el('option', {value: r.run, text: r.run})));
  const legacy = state.legacy.filter((l) => !state.runs.some((r) => r.run === l.run));
  els.notice.hidden = !legacy.length;
  if (legacy.length) {
    els.notice.textContent =
      `Not shown here (logged before the Saliency tab existed; see IMAGES → ${legacy[0].prefix}/overview): ` +
      legacy.map((l) => l.run).join(', ');
  }
  const keep = state.runs.find((r) => r.run === state.run);
  await selectRun(keep ? keep.run : state.runs[0].run);
}

async function selectRun(run) {
  state.run = run;
  els.run.value = run;
  const prefixes = state.runs.find((r) => r.run === run).prefixes;
  els.prefix.replaceChildren(...prefixes.map((p) => el('option', {value: p.prefix, text: p.prefix})));
  const keep = prefixes.find((p) => p.prefix === state.prefix);
  await selectPrefix(keep ? keep.prefix : prefixes[0].prefix);
}

async function selectPrefix(prefix) {
  state.prefix = prefix;
  els.prefix.value = prefix;
  const token = ++state.token;
  state.probe = state.matrix = state.scores = null;
  closeLightbox();
  const entry = state.runs.find((r) => r.run === state.run).prefixes.find((p) => p.prefix === prefix);
  if (!entry.supported) {
    showMessage('Written by a newer lightning-saliency', [
      `The Saliency data of ${state.run} (${prefix}) has format ${entry.version}; this plugin reads format ` +
        `${state.formatVersion} and older. Upgrade lightning-saliency where TensorBoard runs.`,
    ]);
    return;
  }
  let probe;
  try {
    probe = await getJSON('probe', {run: state.run, prefix});
  } catch (error) {
    if (token === state.token) showMessage('This run’s Saliency data could not be read.', [errorText(error)]);
    return;
  }
  if (token !== state.token) return;
  state.probe = probe;
  state.start = null;
  if (!probe.num_images || !probe.methods.length) {
    showMessage('This run has no maps to show.', [
      probe.error || `${state.run} (${prefix}) holds no probe images or no method’s maps.`,
    ]);
    return;
  }
  hideMessage();
  if (state.image >= probe.num_images) state.image = 0;
  renderThumbs();
  await selectImage(state.image);
}

async function selectImage(index) {
  state.image = index;
  for (const t of els.thumbs.children) t.classList.toggle('on', Number(t.dataset.index) === index);
  await Promise.all([loadMatrix(), loadScores()]);
}

function setMode(mode) {
  state.mode = mode;
  updateToggles();
  for (const cell of els.matrix.querySelectorAll('.cell')) cell.dataset.drawn = '';
  for (const cell of els.matrix.querySelectorAll('.cell')) if (cell.dataset.visible === '1') drawCell(cell);
  if (lightbox) openLightbox(lightbox.method, lightbox.column);
}

function setSize(size) {
  state.size = size;
  updateToggles();
  loadMatrix();
}

function setSpread(spread) {
  state.spread = spread;
  state.start = null;
  updateToggles();
  loadMatrix();
}

function page(direction) {
  if (!state.matrix || state.spread) return;
  const count = columnsThatFit();
  const start = state.matrix.start + direction * count;
  state.start = Math.max(0, Math.min(start, state.probe.steps.length - count));
  loadMatrix();
}

function reloadAll() {
  bitmaps.clear();
  loadRuns().catch((error) => showMessage('The Saliency tab could not load its data.', [errorText(error)]));
}

// ------------------------------------------------------------------ probe images

function parseCaption(lines) {
  const find = (head) => (lines.find((l) => l.startsWith(head)) || '').slice(head.length);
  const truth = find('true: ');
  const pred = find('pred: ').replace(/\s*\([^)]*\)\s*$/, '');
  return {truth, pred, wrong: Boolean(truth && pred && truth !== pred)};
}

function captionLines(lines) {
  const {wrong} = parseCaption(lines);
  return lines.map((line, i) =>
    el('span', {class: i === 0 ? 'first' : line.startsWith('pred: ') && wrong ? 'wrong' : '', text: line}),
  );
}

function renderThumbs() {
  const {captions, num_images: count, steps} = state.probe;
  const last = steps[steps.length - 1];
  const thumbs = [];
  for (let i = 0; i < count; i++) {
    const lines = captions[i] || [`#${i}`];
    thumbs.push(
      el(
        'button',
        {
          type: 'button',
          class: 'thumb' + (parseCaption(lines).wrong ? ' is-wrong' : ''),
          'data-index': i,
          title: lines.join('\n'),
          onclick: () => selectImage(i),
        },
        el('img', {src: imageUrl(last, i), alt: lines[0], loading: 'lazy', draggable: 'false'}),
        el('span', {class: 'lines'}, captionLines(lines)),
      ),
    );
  }
  els.thumbs.replaceChildren(...thumbs);
}

// ------------------------------------------------------------------ the matrix

function columnsThatFit() {
  const width = els.matrix.clientWidth || window.innerWidth - 400;
  return Math.max(1, Math.floor((width - LABEL_WIDTH - 8) / (state.size + GAP)));
}

function spreadSteps(steps, count) {
  if (steps.length <= count) return steps.slice();
  const picked = new Set();
  for (let i = 0; i < count; i++) picked.add(steps[Math.round((i * (steps.length - 1)) / (count - 1 || 1))]);
  return steps.filter((s) => picked.has(s));
}

async function loadMatrix() {
  if (!state.probe) return;
  const token = state.token;
  const image = state.image;
  const steps = state.probe.steps;
  const count = Math.min(columnsThatFit(), 64);
  const params = {run: state.run, prefix: state.prefix, image};
  if (state.spread) params.steps = spreadSteps(steps, count).join(',');
  else {
    params.count = count;
    params.start = state.start === null ? Math.max(0, steps.length - count) : state.start;
  }
  let matrix;
  try {
    matrix = await getJSON('matrix', params);
  } catch (error) {
    if (token === state.token) els.matrix.replaceChildren(el('p', {class: 'error-text', text: errorText(error)}));
    return;
  }
  if (token !== state.token || image !== state.image) return;
  state.matrix = matrix;
  renderMatrix();
  if (state.scores && state.scores.image === image) renderSide(); // the band of the columns shown
}

function hasEpochs() {
  // Columns are titled by epoch only when every logged step knows its epoch, else by step throughout.
  return Boolean(state.probe && state.probe.epochs.length && state.probe.epochs.every((e) => e !== null));
}

function columnTitle(column) {
  return hasEpochs() ? `epoch ${column.epoch}` : `step ${column.step}`;
}

function renderMatrix() {
  const {columns, methods, cells, total, start} = state.matrix;
  const first = columns.length ? state.probe.steps.indexOf(columns[0].step) + 1 : 0;
  els.range.textContent = state.spread
    ? `${columns.length} of ${total} logged epochs, spread`
    : `${columns.length ? `${first}–${first + columns.length - 1}` : 0} of ${total} logged epochs`;
  els.prev.disabled = state.spread || start <= 0;
  els.next.disabled = state.spread || start + columns.length >= total;
  const [w, h] = cellSize(state.size);
  const grid = el('div', {
    class: 'matrix',
    style: `grid-template-columns: ${LABEL_WIDTH}px repeat(${columns.length}, ${w}px); gap: ${GAP}px;`,
  });
  const truth = parseCaption(state.probe.captions[state.image] || []).truth;
  grid.append(el('div', {class: 'corner', text: `image #${state.image}`}));
  for (const column of columns) {
    const pred = (column.caption.find((l) => l.startsWith('pred: ')) || '').slice(6);
    const wrong = truth && pred && !pred.startsWith(truth + ' ');
    grid.append(
      el(
        'div',
        {class: 'colhead', title: [`step ${column.step}`, ...column.caption, column.error || ''].join('\n').trim()},
        el('b', {text: columnTitle(column)}),
        hasEpochs() ? el('span', {class: 'step', text: `step ${column.step}`}) : null,
        column.error
          ? el('span', {class: 'pred wrong', text: column.error})
          : el('span', {class: 'pred' + (wrong ? ' wrong' : ''), text: pred ? `pred: ${pred}` : ''}),
      ),
    );
  }
  if (observer) observer.disconnect();
  observer = new IntersectionObserver(onVisible, {root: null, rootMargin: '200px'});
  methods.forEach((method, row) => {
    grid.append(
      el(
        'div',
        {class: 'rowhead', title: method},
        el('span', {class: 'chip', style: `background:${PALETTE[row % PALETTE.length]}`}),
        el('span', {class: 'name', text: method}),
      ),
    );
    columns.forEach((column, index) => {
      const info = cells[method][index];
      const alarms = (info && info.alarms) || [];
      const cell = el(
        'div',
        {
          class: 'cell' + (alarms.length ? ' alarm' : ''),
          style: `width:${w}px;height:${h}px`,
          'data-method': method,
          'data-step': column.step,
          'data-column': index,
          'data-state': 'waiting',
          title: [`${method} · ${columnTitle(column)} (step ${column.step})`, ...alarms].join('\n'),
          onclick: () => openLightbox(method, index),
        },
        el('canvas', {width: w, height: h}),
        el('span', {class: 'status'}),
        alarms.length ? el('span', {class: 'badge', text: '!'}) : null,
      );
      grid.append(cell);
      observer.observe(cell);
    });
  });
  els.matrix.replaceChildren(grid);
}

function cellSize(size) {
  const [height, width] = (state.probe && state.probe.image_size) || [1, 1];
  return width >= height ? [size, Math.max(8, Math.round((size * height) / width))] : [Math.max(8, Math.round((size * width) / height)), size];
}

function onVisible(entries) {
  for (const entry of entries) {
    entry.target.dataset.visible = entry.isIntersecting ? '1' : '';
    if (entry.isIntersecting && !entry.target.dataset.drawn) drawCell(entry.target);
  }
}

async function drawCell(cell) {
  const token = state.token;
  const matrix = state.matrix;
  const index = Number(cell.dataset.column);
  const method = cell.dataset.method;
  const column = matrix.columns[index];
  const info = matrix.cells[method][index];
  const mode = state.mode;
  cell.dataset.drawn = mode;
  cell.dataset.state = 'loading';
  const status = cell.querySelector('.status');
  status.textContent = '';
  try {
    const picture = await picturesFor(method, column, info, mode);
    if (token !== state.token || matrix !== state.matrix || cell.dataset.drawn !== mode) return;
    paint(cell.querySelector('canvas'), mode, picture);
    cell.dataset.state = 'ready';
  } catch (error) {
    if (token !== state.token || matrix !== state.matrix) return;
    cell.dataset.state = 'error';
    status.textContent = errorText(error);
    const canvas = cell.querySelector('canvas');
    canvas.getContext('2d').clearRect(0, 0, canvas.width, canvas.height);
  }
}

async function picturesFor(method, column, info, mode) {
  const needImage = mode !== 'heat';
  const needMap = mode !== 'input';
  if (needMap && !info) throw new Error('no map stored at this step (not logged, or not kept by TensorBoard)');
  if (needImage && (column.probe_step === null || column.probe_step === undefined)) {
    throw new Error('no probe image stored for this step');
  }
  const [image, map] = await Promise.all([
    needImage ? loadBitmap(imageUrl(column.probe_step)) : null,
    needMap ? loadBitmap(mapUrl(method, column.step)) : null,
  ]);
  return {image, map};
}

function scaled(bitmap, w, h) {
  const canvas = document.createElement('canvas');
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  ctx.imageSmoothingEnabled = bitmap.width > w || bitmap.height > h; // upscaled pixels stay crisp, as in the grids
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(bitmap, 0, 0, w, h);
  return ctx.getImageData(0, 0, w, h);
}

function paint(canvas, mode, {image, map}) {
  const ratio = window.devicePixelRatio || 1;
  const cssWidth = Number(canvas.getAttribute('width'));
  const cssHeight = Number(canvas.getAttribute('height'));
  const w = Math.round(cssWidth * ratio);
  const h = Math.round(cssHeight * ratio);
  canvas.width = w;
  canvas.height = h;
  canvas.style.width = `${cssWidth}px`;
  canvas.style.height = `${cssHeight}px`;
  const ctx = canvas.getContext('2d');
  const out = ctx.createImageData(w, h);
  const lut = state.lut[state.probe.colormap] || state.lut.turbo;
  const alpha = Number(state.probe.alpha);
  const base = image ? scaled(image, w, h).data : null;
  const heat = map ? scaled(map, w, h).data : null;
  const data = out.data;
  for (let i = 0; i < data.length; i += 4) {
    if (!heat) {
      data[i] = base[i];
      data[i + 1] = base[i + 1];
      data[i + 2] = base[i + 2];
    } else {
      const v = 3 * heat[i];
      if (base) {
        data[i] = (1 - alpha) * base[i] + alpha * lut[v];
        data[i + 1] = (1 - alpha) * base[i + 1] + alpha * lut[v + 1];
        data[i + 2] = (1 - alpha) * base[i + 2] + alpha * lut[v + 2];
      } else {
        data[i] = lut[v];
        data[i + 1] = lut[v + 1];
        data[i + 2] = lut[v + 2];
      }
    }
    data[i + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
}

// ------------------------------------------------------------------ enlarged cell

function openLightbox(method, columnIndex) {
  const matrix = state.matrix;
  const column = matrix.columns[columnIndex];
  lightbox = {method, column: columnIndex};
  const info = matrix.cells[method][columnIndex];
  const side = Math.max(160, Math.min(640, Math.floor(window.innerHeight * 0.72), Math.floor(window.innerWidth * 0.55)));
  const [w, h] = cellSize(side);
  const canvas = el('canvas', {width: w, height: h});
  const status = el('p', {class: 'status-text'});
  const row = matrix.methods.indexOf(method);
  const scores = scoresAt(method, column.step);
  const card = el(
    'div',
    {class: 'card', role: 'dialog', 'aria-label': `${method}, ${columnTitle(column)}`},
    el(
      'div',
      {class: 'card-head'},
      el('span', {class: 'chip', style: `background:${PALETTE[row % PALETTE.length]}`}),
      el('b', {text: method}),
      el('span', {text: ` · ${columnTitle(column)} · step ${column.step} · ${state.mode}`}),
      el('button', {type: 'button', class: 'icon close', title: 'close (Esc)', text: '✕', onclick: closeLightbox}),
    ),
    el('div', {class: 'card-body'}, el('div', {class: 'big', style: `width:${w}px;height:${h}px`}, canvas), el(
      'div',
      {class: 'card-info'},
      el('div', {class: 'lines'}, captionLines(column.caption)),
      scores.length ? el('table', {class: 'at-step'}, scores.map(([name, value]) => el('tr', {}, el('td', {text: name}), el('td', {text: formatValue(value)})))) : null,
      ...((info && info.alarms) || []).map((text) => el('p', {class: 'alarm-text', text})),
      status,
      el('p', {class: 'hint', text: '← → epochs · ↑ ↓ methods · Esc closes'}),
    )),
  );
  els.lightbox.replaceChildren(card);
  els.lightbox.hidden = false;
  picturesFor(method, column, info, state.mode)
    .then((picture) => paint(canvas, state.mode, picture))
    .catch((error) => (status.textContent = errorText(error)));
}

function closeLightbox() {
  lightbox = null;
  els.lightbox.hidden = true;
  els.lightbox.replaceChildren();
}

function onKey(event) {
  if (!lightbox || !state.matrix) return;
  const {methods, columns} = state.matrix;
  let {method, column} = lightbox;
  if (event.key === 'Escape') return closeLightbox();
  if (event.key === 'ArrowLeft') column = Math.max(0, column - 1);
  else if (event.key === 'ArrowRight') column = Math.min(columns.length - 1, column + 1);
  else if (event.key === 'ArrowUp') method = methods[Math.max(0, methods.indexOf(method) - 1)];
  else if (event.key === 'ArrowDown') method = methods[Math.min(methods.length - 1, methods.indexOf(method) + 1)];
  else return;
  event.preventDefault();
  openLightbox(method, column);
}

// ------------------------------------------------------------------ scores beside the matrix

async function loadScores() {
  const token = state.token;
  const image = state.image;
  let scores;
  try {
    scores = await getJSON('scores', {run: state.run, prefix: state.prefix, image});
  } catch (error) {
    if (token === state.token) els.side.replaceChildren(el('p', {class: 'error-text', text: errorText(error)}));
    return;
  }
  if (token !== state.token || image !== state.image) return;
  state.scores = scores;
  renderSide();
}

function scoresAt(method, step) {
  const scores = state.scores;
  if (!scores || !scores.scores[method]) return [];
  const i = scores.steps.indexOf(step);
  return Object.entries(scores.scores[method])
    .map(([name, values]) => [name, values[i]])
    .filter(([, value]) => value !== null && value !== undefined);
}

function formatValue(value) {
  return value === null || value === undefined ? '–' : Number(value).toFixed(3);
}

function renderSide() {
  const scores = state.scores;
  const methods = (state.matrix && state.matrix.methods) || state.probe.methods;
  const caption = state.probe.captions[state.image] || [`#${state.image}`];
  const names = [];
  for (const method of methods) for (const name of Object.keys(scores.scores[method] || {})) if (!names.includes(name)) names.push(name);
  const shown = new Set(((state.matrix && state.matrix.columns) || []).map((c) => c.step));
  const legend = el(
    'div',
    {class: 'legend'},
    methods.map((m, row) => el('span', {}, el('span', {class: 'chip', style: `background:${PALETTE[row % PALETTE.length]}`}), m)),
    el('span', {}, el('span', {class: 'ring'}), 'alarm'),
  );
  const charts = names.map((name) => chart(name, methods, scores, shown));
  const alarms = scores.alarms.slice(-40).reverse();
  els.side.replaceChildren(
    el('h3', {}, `Image #${state.image}`, el('span', {class: 'sub', text: ' at the latest step'})),
    el('div', {class: 'lines side-caption'}, captionLines(caption)),
    el('h3', {text: 'Scores across epochs'}),
    names.length ? legend : el('p', {class: 'hint', text: 'No scores were logged for this image.'}),
    el('div', {class: 'charts'}, charts),
    el('h3', {}, 'Alarms', el('span', {class: 'sub', text: ` (${scores.alarms.length} on this image)`})),
    alarms.length
      ? el('ul', {class: 'alarms'}, alarms.map((a) => el('li', {text: a.text})))
      : el('p', {class: 'hint', text: 'None fired on this image.'}),
    scores.other_alarms.length
      ? el('ul', {class: 'alarms'}, scores.other_alarms.slice(-10).map((a) => el('li', {text: a.text})))
      : '',
  );
}

function chart(name, methods, scores, shown) {
  const W = 170;
  const H = 86;
  const left = 26;
  const right = 6;
  const top = 18;
  const bottom = 14;
  const n = scores.steps.length;
  const values = methods.flatMap((m) => ((scores.scores[m] || {})[name] || []).filter((v) => v !== null));
  let lo = Math.min(0, ...values);
  let hi = Math.max(1, ...values);
  if (hi - lo < 1e-9) hi = lo + 1;
  const x = (i) => left + (n <= 1 ? (W - left - right) / 2 : (i * (W - left - right)) / (n - 1));
  const y = (v) => top + ((hi - v) * (H - top - bottom)) / (hi - lo);
  const direction = scores.higher_is_better[name];
  const arrow = direction === true ? ' ↑' : direction === false ? ' ↓' : '';
  const nodes = [
    svg('text', {x: 2, y: 11, class: 'title'}, document.createTextNode(name + arrow)),
    svg('line', {x1: left, x2: W - right, y1: y(lo), y2: y(lo), class: 'axis'}),
    svg('line', {x1: left, x2: left, y1: top, y2: H - bottom, class: 'axis'}),
    svg('text', {x: left - 3, y: top + 4, class: 'tick end'}, document.createTextNode(hi.toFixed(hi % 1 ? 1 : 0))),
    svg('text', {x: left - 3, y: H - bottom, class: 'tick end'}, document.createTextNode(lo.toFixed(lo % 1 ? 1 : 0))),
  ];
  const label = (i) => (hasEpochs() ? `ep ${scores.epochs[i]}` : `step ${scores.steps[i]}`);
  if (n) {
    nodes.push(svg('text', {x: left, y: H - 2, class: 'tick'}, document.createTextNode(label(0))));
    if (n > 1) nodes.push(svg('text', {x: W - right, y: H - 2, class: 'tick end'}, document.createTextNode(label(n - 1))));
  }
  const inPage = scores.steps.map((s, i) => (shown.has(s) ? i : -1)).filter((i) => i >= 0);
  if (inPage.length && inPage.length < n) {
    const a = x(inPage[0]) - 3;
    const b = x(inPage[inPage.length - 1]) + 3;
    nodes.splice(1, 0, svg('rect', {x: a, y: top, width: Math.max(b - a, 6), height: H - top - bottom, class: 'band'}));
  }
  methods.forEach((method, row) => {
    const series = (scores.scores[method] || {})[name];
    if (!series) return;
    const colour = PALETTE[row % PALETTE.length];
    let path = '';
    series.forEach((v, i) => {
      if (v === null) return;
      path += `${path && series[i - 1] !== null ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
    });
    nodes.push(svg('path', {d: path, stroke: colour, class: 'series'}));
    series.forEach((v, i) => {
      if (v === null) return;
      const fired = scores.alarms.some((a) => a.method === method && a.score === name && a.step === scores.steps[i]);
      if (!fired && n > 24) return;
      nodes.push(
        svg(
          'circle',
          {cx: x(i), cy: y(v), r: fired ? 3.6 : 1.8, fill: fired ? '#fff' : colour, stroke: fired ? '#d32f2f' : colour, class: fired ? 'fired' : 'dot'},
          svg('title', {}, document.createTextNode(`${method} · ${label(i)} (step ${scores.steps[i]}): ${formatValue(v)}${fired ? ' · alarm' : ''}`)),
        ),
      );
    });
  });
  return svg('svg', {viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'chart', 'data-score': name}, nodes);
}
