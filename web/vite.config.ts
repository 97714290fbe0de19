import { defineConfig } from "vite";
import { svelte } from "@sveltejs/vite-plugin-svelte";

// The built app ships inside the Python package; the server serves it from `/`.
export default defineConfig({
  plugins: [svelte()],
  base: "./",
  build: {
    outDir: "../src/deepscope/server/static",
    emptyOutDir: true,
    target: "es2022",
    chunkSizeWarningLimit: 600,
  },
  server: {
    proxy: { "/api": process.env.DEEPSCOPE_API ?? "http://127.0.0.1:8765" },
  },
});
