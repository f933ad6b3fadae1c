// Developer UI smoke check against a running ComfyUI (not CI; docs/design/comfyui_integration.md#checking-in-the-real-front-end).
//
//   npm install playwright-core            (in any folder; uses the system chromium, no browser download)
//   NODE_PATH=<that folder>/node_modules node tools/ui_smoke.js [http://127.0.0.1:8188] [out.json]
//
// Prints the ComfyUI version the server reports (/system_stats) and the frontend version the page runs;
// the screenshots go next to out.json.
// Loads every workflows/*.json into the real frontend, records the nodes it could not create,
// the prompt the frontend builds (app.graphToPrompt) for comparison with tools/comfy_graph.ui_to_api,
// the widgets a freshly created VidSeg node shows, and takes a screenshot per workflow.
const { chromium } = require('playwright-core');
const fs = require('fs');
const path = require('path');

(async () => {
  const url = process.argv[2] || 'http://127.0.0.1:8188';
  const outFile = process.argv[3] || 'ui_smoke.json';
  const shotDir = path.dirname(path.resolve(outFile));
  const wfDir = path.join(__dirname, '..', 'workflows');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  const out = { pageErrors: [], workflows: {} };
  const stats = await (await fetch(`${url}/system_stats`)).json();
  out.comfyuiVersion = (stats.system || {}).comfyui_version;
  page.on('pageerror', (e) => out.pageErrors.push(String(e)));
  await page.goto(url, { waitUntil: 'networkidle', timeout: 120000 });
  await page.waitForFunction(() => window.app && window.app.graph, null, { timeout: 120000 });
  await page.keyboard.press('Escape');
  out.frontendVersion = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ || null);
  console.log(`ComfyUI ${out.comfyuiVersion} at ${url}, frontend ${out.frontendVersion}`);
  out.registered = await page.evaluate(
    () => Object.keys(LiteGraph.registered_node_types).filter((k) => k.startsWith('VidSeg')));
  out.freshWidgets = await page.evaluate(() => {
    const r = {};
    for (const t of Object.keys(LiteGraph.registered_node_types).filter((k) => k.startsWith('VidSeg'))) {
      r[t] = (LiteGraph.createNode(t).widgets || []).map((w) => w.name);
    }
    return r;
  });
  for (const f of fs.readdirSync(wfDir).filter((f) => f.endsWith('.json')).sort()) {
    const wf = JSON.parse(fs.readFileSync(path.join(wfDir, f)));
    await page.evaluate(async (g) => { await window.app.loadGraphData(g); }, wf);
    await page.waitForTimeout(1000);
    await page.keyboard.press('Escape');  // a dialog the frontend opened late (templates)
    const missing = await page.evaluate(() => window.app.graph._nodes
      .filter((n) => !LiteGraph.registered_node_types[n.type]).map((n) => n.type));
    const prompt = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
    await page.screenshot({ path: path.join(shotDir, `${path.basename(f, '.json')}.png`) });
    // newer frontends check a loaded workflow's files and models and say "N errors found"
    const notices = await page.locator('text=/\\d+ errors? found/').allInnerTexts();
    out.workflows[f] = { missing, prompt, notices };
    console.log(`${f}: ${Object.keys(prompt).length} nodes in the prompt, missing node types: ${JSON.stringify(missing)}` +
      (notices.length ? `, frontend notice: ${notices.join('; ')}` : ''));
  }
  fs.writeFileSync(outFile, JSON.stringify(out, null, 1));
  console.log(`VidSeg node types registered in the frontend: ${out.registered.length}; wrote ${outFile}`);
  await browser.close();
})();
