// The login page: posts the credentials as JSON and goes to the dashboard on success.
(() => {
  "use strict";
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");

  function show(message) {
    error.textContent = message;
    error.hidden = false;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const body = JSON.stringify({
      username: document.getElementById("login-user").value,
      password: document.getElementById("login-password").value,
    });
    let response;
    try {
      response = await fetch("/api/v1/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body,
        credentials: "same-origin",
      });
    } catch (err) {
      show("The node does not answer.");
      return;
    }
    if (response.ok) {
      location.replace("/");
      return;
    }
    if (response.status === 429) {
      const wait = response.headers.get("Retry-After");
      show(`Too many failed logins: try again in ${wait || "a few"} s.`);
    } else {
      show("Wrong user name or password.");
    }
    document.getElementById("login-password").select();
  });
})();
