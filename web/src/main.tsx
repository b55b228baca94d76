import { render } from "preact";
import "./style.css";
import { App } from "./app";

const root = document.getElementById("app")!;
root.textContent = ""; // the static "Loading…" line goes once the app runs
render(<App />, root);
