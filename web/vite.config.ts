// Builds the dashboard's scripts and styles into hashed files beside the Python package,
// with a manifest that the server reads to name them (plait.web_application.pages).
import { defineConfig } from "vite";

export default defineConfig({
  base: "/ui/static/",
  build: {
    outDir: "../operator/plait/web_application/static",
    emptyOutDir: true,
    manifest: true,
    target: "es2020",
    sourcemap: false,
    rollupOptions: { input: "src/main.ts" },
  },
});
