import { mount } from "svelte";
import "./app.css";
import { takeTokenFromUrl } from "./api/client";
import App from "./App.svelte";
import { initState } from "./core/state.svelte";

takeTokenFromUrl();
initState();
mount(App, { target: document.getElementById("app")! });
