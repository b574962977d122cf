// The link form's proof of work (gateway/web/challenge.py): find the number n
// with SHA-256(salt + n) == challenge, then post the form with the solution.
// No third-party code; crypto.subtle needs https or loopback, as the site does.
"use strict";
(function () {
  const form = document.querySelector("form[data-challenge]");
  if (!form) return;
  const field = form.querySelector("input[name=altcha]");
  const button = form.querySelector("button[type=submit]");
  const c = JSON.parse(form.dataset.challenge);
  const encoder = new TextEncoder();

  async function hex(text) {
    const digest = await crypto.subtle.digest("SHA-256", encoder.encode(text));
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function solve() {
    const batch = 500; // digests in flight at once
    for (let start = 0; start <= c.maxnumber; start += batch) {
      const tries = [];
      for (let n = start; n < start + batch && n <= c.maxnumber; n++) tries.push(hex(c.salt + n));
      const found = (await Promise.all(tries)).indexOf(c.challenge);
      if (found >= 0) return start + found;
    }
    return null;
  }

  let solving = null;
  form.addEventListener("submit", async (event) => {
    if (field.value) return;
    event.preventDefault();
    if (solving) return;
    button.disabled = true;
    solving = solve();
    const number = await solving;
    const payload = {
      algorithm: c.algorithm, challenge: c.challenge, number: number,
      salt: c.salt, signature: c.signature,
    };
    field.value = btoa(JSON.stringify(payload));
    form.submit();
  });
})();
