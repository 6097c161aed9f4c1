import { escapeHtml, htmlPage, type PageAssets, type UiConfig } from '@tributary/gateway/ui';

const SAMPLE = `Solar and wind capacity grew strongly last year, and battery storage costs fell again.
Grid operators report fewer curtailments, although transmission remains a bottleneck.
Analysts expect renewable investment to keep rising as financing gets cheaper.`;

/** The demo page's HTML: its script (client/demo.ts) fills it in. */
export function demoPage(assets: PageAssets, config: UiConfig): string {
  return htmlPage({
    title: 'Tributary · demo',
    assets,
    config,
    body: `
<header class="top">
  <h1>Tributary</h1>
  <p>Upload a document and watch its analysis arrive live over graphql-ws, or cancel it on its way.</p>
  <nav aria-label="Tools"><a href="${escapeHtml(config.graphqlPath)}">GraphiQL</a></nav>
</header>
<main>
  <div class="column">
    <section class="card" aria-labelledby="token-heading">
      <h2 id="token-heading">Token</h2>
      <label for="token">Bearer token</label>
      <input id="token" name="token" type="text" autocomplete="off" spellcheck="false" placeholder="eyJhbGciOi…" aria-describedby="token-hint">
      <p class="hint" id="token-hint"></p>
    </section>
    <section class="card" aria-labelledby="upload-heading">
      <h2 id="upload-heading">Upload a document</h2>
      <form id="upload">
        <label for="title">Title</label>
        <input id="title" name="title" required maxlength="500" value="Energy report">
        <label for="content">Content</label>
        <textarea id="content" name="content" rows="7" required>${escapeHtml(SAMPLE)}</textarea>
        <label for="content-type">Content type</label>
        <select id="content-type" name="contentType">
          <option value="text/plain">Plain text (text/plain)</option>
          <option value="text/markdown">Markdown (text/markdown)</option>
          <option value="text/html">HTML (text/html)</option>
        </select>
        <label for="file">Or a file</label>
        <input id="file" name="file" type="file" accept=".pdf,.docx,.html,.htm,.md,.markdown,.txt,application/pdf,application/vnd.openxmlformats-officedocument.wordprocessingml.document,text/html,text/markdown,text/plain" aria-describedby="file-hint">
        <p class="hint" id="file-hint">PDF, DOCX, HTML, Markdown or plain text. Its type is read from its bytes; its text is analysed instead of the content above.</p>
        <label for="priority">Priority</label>
        <select id="priority" name="priority" aria-describedby="priority-hint">
          <option value="HIGH">High</option>
          <option value="NORMAL" selected>Normal</option>
          <option value="LOW">Low (a bulk import)</option>
        </select>
        <p class="hint" id="priority-hint">Orders your tenant’s own waiting work (LOW is never starved); it never puts you ahead of another tenant.</p>
        <button type="submit" id="upload-submit">Upload and analyse</button>
      </form>
      <div id="error" class="error" role="alert" hidden></div>
    </section>
  </div>
  <div class="column">
    <section class="card" aria-labelledby="job-heading">
      <h2 id="job-heading">Job</h2>
      <ol class="steps" id="steps" aria-hidden="true">
        <li data-step="QUEUED">Queued</li>
        <li data-step="RUNNING">Running</li>
        <li data-step="COMPLETED">Completed</li>
      </ol>
      <p id="job-status" role="status" aria-live="polite">No job yet: upload a document.</p>
      <button type="button" id="cancel-job" class="secondary" hidden>Cancel job</button>
      <ol class="timeline" id="timeline" aria-label="Status changes"></ol>
    </section>
    <section class="card" id="analysis" aria-labelledby="analysis-heading" hidden>
      <h2 id="analysis-heading">Analysis</h2>
      <p id="summary"></p>
      <p id="original" hidden><a id="original-link" href="#">Download the original</a></p>
      <h3 id="doc-themes-heading">Themes</h3>
      <ul class="bars" id="doc-themes" aria-labelledby="doc-themes-heading"></ul>
      <h3>Sentiment</h3>
      <p id="sentiment"></p>
    </section>
    <section class="card" aria-labelledby="chart-heading">
      <h2 id="chart-heading">Your tenant’s themes</h2>
      <ol class="bars" id="chart" aria-labelledby="chart-heading"></ol>
      <p id="chart-empty">No analysed documents yet.</p>
    </section>
  </div>
</main>
`,
  });
}
