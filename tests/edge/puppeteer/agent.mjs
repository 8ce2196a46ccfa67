// An agent on a session's browser with Puppeteer (tests/edge/test_cdp.py): connect
// to the CDP URL the edge handed out, find the page whose URL starts with the
// second argument, type the third into #word, click #finish, and print what it
// saw as one JSON line. It disconnects; the browser is the session's, not its own.
import puppeteer from "puppeteer-core";

const [endpoint, pageUrl, text] = process.argv.slice(2);
const browser = await puppeteer.connect({ browserWSEndpoint: endpoint, defaultViewport: null });
try {
  // Puppeteer learns the browser's targets just after connecting: wait for the page.
  const target = await browser.waitForTarget((t) => t.url().startsWith(pageUrl), { timeout: 20000 });
  const page = await target.page();
  if (!page) throw new Error(`no page at ${pageUrl}`);
  await page.type("#word", text);
  await page.click("#finish");
  const status = await page.$eval("#status", (element) => element.textContent);
  console.log(JSON.stringify({ version: await browser.version(), url: page.url(), status }));
} finally {
  await browser.disconnect();
}
