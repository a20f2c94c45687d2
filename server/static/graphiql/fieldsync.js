/*
 * fieldsync's glue for the vendored GraphiQL: a sign-in bar that stores a bearer
 * token in localStorage and a fetcher that sends it. Plain browser JavaScript, no
 * build step; it expects the UMD globals React, ReactDOM and GraphiQL to be loaded
 * first and reads its settings from <script id="fs-config" type="application/json">.
 */
(function () {
  "use strict";

  var TOKEN_KEY = "fieldsync.token";
  var EMAIL_KEY = "fieldsync.email";
  var LOGIN_MUTATION = [
    "mutation Login($email: String!, $password: String!) {",
    "  login(email: $email, password: $password) {",
    "    __typename",
    "    ... on LoginSuccess { token user { email } }",
    "    ... on InvalidCredentials { message }",
    "  }",
    "}",
  ].join("\n");
  var DEFAULT_QUERY = [
    "# fieldsync GraphiQL",
    "#",
    "# Sign in with the bar above: the token is",
    "# kept in this browser and sent as",
    "#   Authorization: Bearer <token>",
    "# An Authorization header set in the Headers",
    "# tab below takes precedence.",
    "",
    "{",
    "  me {",
    "    email",
    "    role",
    "  }",
    "}",
    "",
  ].join("\n");

  var config = JSON.parse(document.getElementById("fs-config").textContent);
  var endpoint = config.endpoint;
  // Admin example operations (server/static/graphiql/examples): {title, query, variables}.
  var examples = Array.isArray(config.examples) ? config.examples : [];

  // localStorage may be unavailable (privacy modes): fall back to memory.
  var memory = {};
  var store = {
    get: function (key) {
      try {
        return window.localStorage.getItem(key);
      } catch (e) {
        return Object.prototype.hasOwnProperty.call(memory, key) ? memory[key] : null;
      }
    },
    set: function (key, value) {
      try {
        window.localStorage.setItem(key, value);
      } catch (e) {
        memory[key] = value;
      }
    },
    remove: function (key) {
      try {
        window.localStorage.removeItem(key);
      } catch (e) {
        delete memory[key];
      }
    },
  };

  var els = {
    form: document.getElementById("fs-auth"),
    email: document.getElementById("fs-email"),
    password: document.getElementById("fs-password"),
    signin: document.getElementById("fs-signin"),
    signout: document.getElementById("fs-signout"),
    status: document.getElementById("fs-status"),
    examples: document.getElementById("fs-examples"),
  };

  function setStatus(text, kind) {
    els.status.textContent = text;
    els.status.className = "fs-status" + (kind ? " fs-status-" + kind : "");
  }

  // Seconds-since-epoch expiry of a JWT, or null when the token is not one we can read.
  function tokenExpiry(token) {
    try {
      var part = token.split(".")[1];
      if (!part) return null;
      var json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
      var exp = JSON.parse(json).exp;
      return typeof exp === "number" ? exp : null;
    } catch (e) {
      return null;
    }
  }

  function currentToken() {
    var token = store.get(TOKEN_KEY);
    if (!token) return null;
    var exp = tokenExpiry(token);
    if (exp !== null && exp * 1000 <= Date.now()) {
      clearSession();
      setStatus("Session expired: sign in again", "error");
      return null;
    }
    return token;
  }

  function clearSession() {
    store.remove(TOKEN_KEY);
    store.remove(EMAIL_KEY);
    els.signout.disabled = true;
  }

  function showSession() {
    var token = currentToken();
    if (token) {
      var email = store.get(EMAIL_KEY) || "";
      setStatus(email ? "Signed in as " + email : "Signed in", "ok");
      if (email && !els.email.value) els.email.value = email;
      els.signout.disabled = false;
    } else {
      els.signout.disabled = true;
      if (!els.status.textContent) setStatus("Not signed in");
    }
  }

  function firstErrorMessage(body) {
    if (body && Array.isArray(body.errors) && body.errors.length) {
      return String(body.errors[0].message || "Request failed");
    }
    return null;
  }

  async function signIn(event) {
    event.preventDefault();
    var email = els.email.value.trim();
    var password = els.password.value;
    if (!email || !password) {
      setStatus("Enter an email and a password", "error");
      return;
    }
    els.signin.disabled = true;
    setStatus("Signing in\u2026");
    try {
      var response = await fetch(endpoint, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({
          query: LOGIN_MUTATION,
          operationName: "Login",
          variables: { email: email, password: password },
        }),
      });
      var body = null;
      try {
        body = await response.json();
      } catch (e) {
        body = null;
      }
      var error = firstErrorMessage(body);
      var login = body && body.data ? body.data.login : null;
      if (error) {
        setStatus(error, "error");
      } else if (login && login.__typename === "LoginSuccess" && login.token) {
        var signedInAs = (login.user && login.user.email) || email;
        store.set(TOKEN_KEY, login.token);
        store.set(EMAIL_KEY, signedInAs);
        els.password.value = "";
        els.signout.disabled = false;
        setStatus("Signed in as " + signedInAs, "ok");
      } else if (login && typeof login.message === "string") {
        clearSession();
        setStatus(login.message, "error");
      } else {
        setStatus("Sign-in failed (HTTP " + response.status + ")", "error");
      }
    } catch (e) {
      setStatus("Sign-in failed: " + (e && e.message ? e.message : String(e)), "error");
    } finally {
      els.signin.disabled = false;
    }
  }

  function signOut() {
    clearSession();
    els.password.value = "";
    setStatus("Signed out");
  }

  els.form.addEventListener("submit", signIn);
  els.signout.addEventListener("click", signOut);
  showSession();

  // Add the stored token unless the request already has an Authorization header
  // (for example one typed in GraphiQL's Headers editor).
  function authorizedFetch(input, init) {
    var options = Object.assign({}, init || {});
    var headers = new Headers(options.headers || {});
    var token = currentToken();
    if (token && !headers.has("Authorization")) {
      headers.set("Authorization", "Bearer " + token);
    }
    options.headers = headers;
    options.credentials = options.credentials || "same-origin";
    return window.fetch(input, options);
  }

  var fetcher = GraphiQL.createFetcher({ url: endpoint, fetch: authorizedFetch });

  // ?query=...&variables=...&headers=...&operationName=... prefill the editors.
  var params = new URLSearchParams(window.location.search);
  var props = {
    fetcher: fetcher,
    defaultQuery: DEFAULT_QUERY,
    isHeadersEditorEnabled: true,
    shouldPersistHeaders: false,
  };
  if (params.has("query")) props.query = params.get("query");
  if (params.has("variables")) props.variables = params.get("variables");
  if (params.has("headers")) props.headers = params.get("headers");
  if (params.has("operationName")) props.operationName = params.get("operationName");

  // A browser without saved tabs starts with the welcome tab and one tab per example.
  // GraphiQL keeps tabs in localStorage, so later visits open an example from the menu:
  // reloading with ?query= makes GraphiQL open it in a tab of its own (or switch to it).
  if (examples.length && !params.has("query")) {
    props.defaultTabs = [{ query: DEFAULT_QUERY }].concat(
      examples.map(function (example) {
        return { query: example.query, variables: example.variables || undefined };
      })
    );
  }
  if (els.examples) {
    examples.forEach(function (example, index) {
      var option = document.createElement("option");
      option.value = String(index);
      option.textContent = example.title;
      els.examples.appendChild(option);
    });
    els.examples.disabled = examples.length === 0;
    els.examples.addEventListener("change", function () {
      var example = examples[Number(els.examples.value)];
      if (!example) return;
      var next = new URLSearchParams();
      next.set("query", example.query);
      if (example.variables) next.set("variables", example.variables);
      window.location.search = next.toString();
    });
  }

  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(React.createElement(GraphiQL, props));
})();
