// The test host page: the official MCP Apps host bridge (@modelcontextprotocol/ext-apps AppBridge over
// PostMessageTransport) renders a view in a sandboxed iframe and feeds it one tool call's input and result,
// as an MCP Apps host does. Bundled for the browser by build.mjs (esbuild).
import { AppBridge, PostMessageTransport } from "@modelcontextprotocol/ext-apps/app-bridge";

const state = { bridge: null, context: null, sizes: [], initialized: false, appInfo: null };
window.hostState = state;

function withTimeout(promise, ms, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms)),
  ]);
}

// Renders `view.html` for one tool call and returns once the view has the result.
window.runCase = async function runCase(c) {
  if (state.bridge) await state.bridge.close().catch(() => {});
  state.sizes = [];
  state.initialized = false;
  const holder = document.getElementById("frame-holder");
  holder.textContent = "";
  const iframe = document.createElement("iframe");
  iframe.id = "view";
  iframe.title = "Lumenore chart view";
  // What hosts do: scripts only; an opaque origin with no access to the host page.
  iframe.setAttribute("sandbox", "allow-scripts");
  iframe.style.cssText = `width:${c.width}px;height:150px;border:1px solid #888;display:block`;
  holder.appendChild(iframe);

  state.context = {
    theme: c.theme,
    displayMode: "inline",
    availableDisplayModes: ["inline"],
    locale: "en-US",
    platform: "web",
    containerDimensions: { width: c.width, maxHeight: 4000 },
    toolInfo: { id: 1, tool: c.tool },
  };
  const bridge = new AppBridge(null, { name: "lumenore-e2e-host", version: "1.0.0" }, {}, { hostContext: state.context });
  state.bridge = bridge;
  bridge.onsizechange = ({ width, height }) => {
    state.sizes.push({ width, height });
    if (typeof height === "number" && height > 0) iframe.style.height = `${height}px`;
  };
  const initialized = new Promise((resolve) => {
    bridge.oninitialized = () => {
      state.initialized = true;
      state.appInfo = bridge.getAppVersion ? bridge.getAppVersion() : null;
      resolve();
    };
  });
  // Connect before the document loads, so the view's ui/initialize finds the bridge listening.
  await bridge.connect(new PostMessageTransport(iframe.contentWindow, iframe.contentWindow));
  iframe.srcdoc = c.html;
  await withTimeout(initialized, 10000, "ui/notifications/initialized");
  await bridge.sendToolInput({ arguments: c.arguments });
  await bridge.sendToolResult(c.result);
  return { initialized: state.initialized, appInfo: state.appInfo };
};

window.setTheme = function setTheme(theme) {
  state.context = { ...state.context, theme };
  state.bridge.setHostContext(state.context);
};
