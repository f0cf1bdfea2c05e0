import { defineConfig } from "vite";

export default defineConfig({
  // Relative asset paths: dist/ can be served from any path.
  base: "./",
  build: { target: "es2022" },
});
