import { defineConfig } from "vite";

// Preact's automatic JSX runtime through Vite's own transformer (no Babel preset needed).
// No inline scripts or styles are emitted, so the gateway's strict CSP holds; no module
// preload polyfill (it would be an inline script).
export default defineConfig({
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "dist",
    assetsDir: "assets",
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: "es2020",
  },
});
