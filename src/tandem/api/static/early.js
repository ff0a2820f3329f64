// Tandem dashboard: the first screen's requests, started from <head> while styles and
// scripts still load (on a busy node that is a few hundred milliseconds sooner). The page's
// own code takes each answer once, by the exact path it would have asked for.
"use strict";

window.TandemEarly = (() => {
  const API = "/api/v1";
  const FIRST_TAGS = "/tags/page?offset=0&limit=100";
  const pending = new Map();
  for (const path of ["/status", "/timeline?limit=200", FIRST_TAGS]) {
    pending.set(path, fetch(API + path, { cache: "no-store" }));
  }
  return {
    FIRST_TAGS,
    // The response already on its way for `path`, or null (asked once only).
    take(path) {
      const response = pending.get(path) || null;
      pending.delete(path);
      return response;
    },
  };
})();
