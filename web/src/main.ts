import { mount } from "svelte";
import "./app.css";
import { loadArrow, takeTokenFromUrl } from "./api/client";
import App from "./App.svelte";
import { initState } from "./core/state.svelte";

takeTokenFromUrl();
void loadArrow();
initState();
mount(App, { target: document.getElementById("app")! });
