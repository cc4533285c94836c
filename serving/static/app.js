// The demo page: recommendations for one user, like/dislike feedback, the policy's posterior.
// Plain browser JavaScript, no build step. Every piece of data reaches the DOM through
// textContent or setAttribute, never through innerHTML, so titles cannot inject markup.
"use strict";

(() => {
  // How long a like waits for its own push before the page asks for the list itself.
  const PUSH_WAIT_MS = 4000;
  const $ = (id) => document.getElementById(id);

  const state = {
    userText: null,   // the user id as typed (digits), so ids above 2**53 stay exact
    k: 10,
    slate: null,      // the last /recommendations body shown
    policy: null,     // the last /policy body shown
    facts: null,      // GET /demo/facts: the dataset, known users, cold-start arm, max k
    busy: false,
  };

  // The live push: one EventSource on GET /users/{id}/stream for the user shown.
  const live = {
    source: null,
    key: null,        // "user/k" of the open stream
    ready: false,     // its "ready" event arrived and it has not failed since
    waiters: [],      // this page's own feedback waiting for its push: {movieId, type, resolve}
    late: [],         // this page's own feedback whose push came too late: {movieId, type}
    unanswered: [],   // own feedback whose POST got no answer: {movieId, type, name, undone}
  };
  const LATE_KEPT = 20;

  class ApiError extends Error {
    constructor(status, message, unreachable = false) {
      super(message);
      this.status = status;
      this.unreachable = unreachable;  // no answer at all: stale once the service answers
    }
  }

  // ------------------------------------------------------------------ HTTP
  async function api(method, path, bodyText) {
    const init = { method, headers: { Accept: "application/json" } };
    if (bodyText !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = bodyText;
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, `The service cannot be reached (${err.message}).`, true);
    }
    serviceReached();
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_err) {
      data = null;
    }
    if (!response.ok) {
      throw new ApiError(response.status, describeError(response, data, text));
    }
    return data;
  }

  function describeError(response, data, text) {
    let detail = data && data.detail;
    if (Array.isArray(detail)) {
      // FastAPI validation errors: [{loc: ["query", "user_id"], msg: "..."}, ...]
      detail = detail.map((e) => {
        const where = (e.loc || []).filter((p) => p !== "body" && p !== "query").join(".");
        return where ? `${where}: ${e.msg}` : String(e.msg);
      }).join("; ");
    } else if (detail !== undefined && detail !== null && typeof detail !== "string") {
      detail = JSON.stringify(detail);
    }
    if (!detail) detail = text ? text.slice(0, 300) : response.statusText;
    let message = `${response.status} ${response.statusText || "error"}: ${detail}`;
    const retry = response.headers.get("Retry-After");
    if (retry) message += ` (retry in ${retry} s)`;
    return message;
  }

  // ------------------------------------------------------------------ small helpers
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // What the user asked for that did not happen because the service could not be reached
  // (phrases: "the change to user 6 was not made"), since it last answered.
  const notDone = [];

  // ``err`` an Error (an ApiError names whether the service answered) or a message; ``undone``
  // what did not happen because of it, said after the error.
  function showError(err, undone) {
    const box = $("error");
    const unreachable = err instanceof ApiError && err.unreachable;
    if (unreachable && undone) notDone.push(undone);
    // While the service cannot be reached the box lists everything that failed meanwhile.
    const said = unreachable ? notDone : (undone ? [undone] : []);
    const message = err instanceof Error ? err.message : String(err);
    box.textContent = said.length ? `${message} ${capitalise(said.join("; "))}.` : message;
    box.dataset.unreachable = unreachable ? "true" : "false";
    box.hidden = false;
  }

  const capitalise = (text) => text.charAt(0).toUpperCase() + text.slice(1);

  function clearError() {
    const box = $("error");
    box.textContent = "";
    box.dataset.unreachable = "false";
    box.hidden = true;
  }

  // The service answered (a response, or the stream's "ready"): a "cannot be reached" still
  // shown is stale (found by attack: it stayed after the service was back). What failed
  // meanwhile did not happen, though, and a user who comes back to the page expects to be told
  // so, not to find the error gone as if all had worked (found by attack: a like that was not
  // stored and a change of user that was not made left no trace but a form showing the new
  // user). So the box then says what was not done, and stays until the user's next action.
  function serviceReached() {
    if (notDone.length) {
      showError(`The service answers again, but while it could not be reached `
        + `${notDone.splice(0).join("; ")}.`);
    } else if ($("error").dataset.unreachable === "true") {
      clearError();
    }
  }

  function setStatus(message) {
    $("status").textContent = message;
  }

  function setBusy(busy) {
    state.busy = busy;
    $("recs").setAttribute("aria-busy", busy ? "true" : "false");
    $("load").disabled = busy;
    for (const button of $("recs").querySelectorAll("button")) button.disabled = busy;
  }

  // MovieLens titles carry the film's year and put articles last: "Usual Suspects, The (1995)".
  // That year wins over the catalogue's `year`, which comes from a (sometimes later) release date.
  function splitTitle(title, year) {
    let text = String(title);
    let shown = year === null || year === undefined ? null : year;
    const inTitle = text.match(/^(.*?)\s*\((\d{4})\)\s*$/);
    if (inTitle) {
      text = inTitle[1];
      shown = Number(inTitle[2]);
    }
    const article = text.match(/^(.*), (The|A|An)$/);
    return { name: article ? `${article[2]} ${article[1]}` : text, year: shown };
  }

  function displayTitle(title, year) {
    return splitTitle(title, year).name;
  }

  function sharedGenres(a, b) {
    const other = new Set(b);
    return a.filter((g) => other.has(g));
  }

  // Thumb icons as inline SVG: Debian's Chromium has no emoji font, so emoji showed as boxes.
  const SVG_NS = "http://www.w3.org/2000/svg";
  const THUMB_PATHS = {
    like: "M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4"
      + "a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3",
    dislike: "M10 15v4a3 3 0 0 0 3 3l4-9V2H5.72a2 2 0 0 0-2 1.7l-1.38 9a2 2 0 0 0 2 2.3zm7-13h2.67"
      + "A2.31 2.31 0 0 1 22 4v7a2.31 2.31 0 0 1-2.33 2H17",
  };

  function thumbIcon(type) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("class", "icon");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", THUMB_PATHS[type]);
    svg.append(path);
    return svg;
  }

  const fmt = (x, digits = 3) => (x === null || x === undefined ? "—" : Number(x).toFixed(digits));
  const pct = (x) => `${(100 * x).toFixed(1)}%`;

  // ------------------------------------------------------------------ recommendations
  async function loadRecommendations(reaction) {
    return showSlate(await fetchSlate(state.userText, state.k), reaction);
  }

  function fetchSlate(userText, k) {
    return api("GET", `/recommendations?user_id=${userText}&k=${k}`);
  }

  // A slate from GET /recommendations or from the push (the same JSON).
  function showSlate(slate, reaction) {
    const previous = state.slate;
    state.slate = slate;
    const sameUser = previous && previous.user_id === slate.user_id;
    renderList(slate, sameUser ? previous : null, reaction);
    return { slate, previous: sameUser ? previous : null };
  }

  // An arm's chance of serving the next list: of being drawn, or with multileaved slates of
  // being among the arms multileaved (GET /policy's inclusion_probability).
  const chance = (arm) => arm.inclusion_probability ?? arm.selection_probability;

  function renderList(slate, previous, reaction) {
    $("heading-user").textContent = state.userText;
    const served = $("served-by");
    served.textContent = slate.cold_start
      ? `User ${state.userText} is unknown to the arms: the ${slate.arm} list served them `
        + "outside the policy, so feedback here is stored but rewards no arm."
      : slate.arm.includes("+")
        ? `Multileaved from ${slate.arm.split("+").join(" and ")} (this set chosen with `
          + `probability ${pct(slate.propensity)}): each movie names the arm it came from, `
          + `and feedback on it credits that arm; policy version ${slate.policy_version}.`
        : `Served by ${slate.arm} (chosen with probability ${pct(slate.propensity)}), `
          + `policy version ${slate.policy_version}.`;

    const before = new Map();
    if (previous) previous.items.forEach((item) => before.set(item.movie_id, item.position));
    const target = reaction ? reaction.movie : null;

    const list = $("recs");
    list.replaceChildren();
    list.dataset.eventId = slate.event_id;
    list.dataset.arm = slate.arm;
    for (const item of slate.items) {
      const li = el("li", "movie");
      li.dataset.movieId = String(item.movie_id);
      li.dataset.position = String(item.position);
      li.dataset.genres = item.genres.join("|");
      if (item.arm) li.dataset.arm = item.arm;

      li.append(el("span", "position", item.position));

      const info = el("div", "info");
      const split = splitTitle(item.title, item.year);
      // Titles in <bdi>, isolated with their own direction: a right-to-left title had put its
      // year, and its neighbours in "Left the list", on the wrong side (found by attack).
      const title = el("h3", "title");
      title.append(el("bdi", "name", split.name));
      if (split.year !== null) title.append(" ", el("span", "year", `(${split.year})`));
      info.append(title);
      if (item.arm && item.arm !== slate.arm) {  // a multileaved slate: the contributing arm
        const from = el("span", "badge item-arm", `from ${item.arm}`);
        from.title = `${item.arm} contributed this movie; feedback on it credits ${item.arm}`;
        title.append(" ", from);
      }
      const genres = el("ul", "genres");
      genres.setAttribute("aria-label", "Genres");
      for (const g of item.genres) genres.append(el("li", "genre", g));
      info.append(genres);

      const notes = el("p", "notes");
      if (previous) {
        const old = before.get(item.movie_id);
        let move;
        if (old === undefined) move = el("span", "move new", "new");
        else if (old > item.position) move = el("span", "move up", `▲ ${old - item.position}`);
        else if (old < item.position) move = el("span", "move down", `▼ ${item.position - old}`);
        else move = el("span", "move same", "=");
        move.title = old === undefined ? "not in the previous list" : `was #${old}`;
        notes.append(move);
      }
      if (target) {
        const shared = sharedGenres(item.genres, target.genres);
        if (shared.length) {
          li.classList.add("lookalike", reaction.type === "dislike" ? "disliked-like" : "liked-like");
          const tag = el("span", "lookalike-tag", `shares ${shared.join(", ")}`);
          tag.title = `shares ${shared.join(", ")} with “${target.name}”`;
          notes.append(tag);
        }
      }
      if (notes.childNodes.length) info.append(notes);
      li.append(info);

      const name = `${split.name}${split.year !== null ? ` (${split.year})` : ""}`;
      const actions = el("div", "actions");
      actions.append(feedbackButton("like", "More like this", name, item),
                     feedbackButton("dislike", "Less of this", name, item));
      li.append(actions);
      list.append(li);
    }
    if (!slate.items.length) list.append(el("li", "empty", "No movies left to recommend."));

    if (previous) {
      const now = new Set(slate.items.map((i) => i.movie_id));
      const gone = previous.items.filter((i) => !now.has(i.movie_id)
        && (!target || i.movie_id !== target.movie_id));
      if (gone.length) {
        const out = el("li", "dropped");
        out.append(el("span", "dropped-label", "Left the list: "));
        gone.forEach((item, n) => {
          out.append(n ? ", " : "", el("bdi", "name", displayTitle(item.title, item.year)));
        });
        list.append(out);
      }
    }
  }

  function feedbackButton(type, label, name, item) {
    const button = el("button", `feedback ${type}`);
    button.type = "button";
    button.dataset.feedback = type;
    button.dataset.movieId = String(item.movie_id);
    button.append(thumbIcon(type), label);
    const hidden = el("span", "sr-only", `: ${name}`);
    button.append(hidden);
    button.disabled = state.busy;
    return button;
  }

  // ------------------------------------------------------------------ feedback
  async function sendFeedback(movieId, type, button) {
    const slate = state.slate;
    const item = slate && slate.items.find((i) => i.movie_id === movieId);
    if (!item || state.busy) return;
    const focusIndex = Array.from($("recs").querySelectorAll(`button[data-feedback="${type}"]`))
      .indexOf(button);
    clearError();
    setBusy(true);
    const verb = type === "like" ? "liked" : "disliked";
    const name = displayTitle(item.title, item.year);
    try {
      // user_id goes in as the digits typed so that large ids are not rounded by JSON numbers.
      const rest = JSON.stringify({ movie_id: item.movie_id, feedback_type: type,
                                    event_id: slate.event_id });
      // Waiting before the POST: the push may arrive before its answer does.
      const pushed = awaitPush(item.movie_id, type);
      let stored;
      try {
        stored = await api("POST", "/feedback", `{"user_id":${state.userText},${rest.slice(1)}`);
      } catch (err) {
        forgetWaiter(item.movie_id, type);
        if (!err.unreachable) {
          showError(err);  // refused: not stored, no push will come for it
          return;
        }
        // No answer, but the request may have reached the service and been stored (the
        // connection lost after it went out): then its push comes, maybe before the error did.
        const undone = `your ${type} of “${name}” got no answer and may not have been stored`;
        const lost = { movieId: item.movie_id, type, name, undone };
        const early = await pushed;  // settled: its push, or null from forgetWaiter
        // Not a late push of a list fetched meanwhile (a dropped stream settles its waiters).
        live.late = live.late.filter((w) => w.movieId !== item.movie_id || w.type !== type);
        if (early) {
          showStoredAfterAll(early, lost);
        } else {
          live.unanswered.push(lost);  // its push may still come (onUpdate)
          if (live.unanswered.length > LATE_KEPT) live.unanswered.shift();
          showError(err, lost.undone);
        }
        return;
      }
      // Sent again and stored: an earlier unanswered one of it is no longer in doubt.
      live.unanswered = live.unanswered.filter((w) => w.movieId !== item.movie_id
        || w.type !== type);
      const reaction = { type, movie: { movie_id: item.movie_id, genres: item.genres, name } };
      const before = state.policy;
      // The stream brings the next list (a logged decision) and the policy; without it (not
      // connected, or late) the page asks for both itself.
      const update = await pushed;
      let next;
      let previous;
      if (update) {
        ({ slate: next, previous } = showSlate(update.recommendations, reaction));
        showPolicy(update.policy, next.cold_start ? null : next.arm);
      } else {
        ({ slate: next, previous } = await loadRecommendations(reaction));
        await refreshPolicy(next.cold_start ? null : next.arm);
      }
      showReward(stored, type, name, before, state.policy);
      showMovement(stored, type, before, state.policy, next);
      const note = String(stored.note).replace(/[.\s]+$/, "");
      setStatus(`You ${verb} “${name}”: ${note}. ${summarise(reaction, previous, next)}`);
    } catch (err) {
      showError(err, `your ${type} of “${name}” was stored but the list after it was not loaded`);
    } finally {
      setBusy(false);
      const again = $("recs").querySelectorAll(`button[data-feedback="${type}"]`);
      const focus = again[Math.min(Math.max(focusIndex, 0), again.length - 1)];
      (focus || $("recs-heading")).focus();
    }
  }

  function showReward(stored, type, name, before, after) {
    const box = $("last-reward");
    box.hidden = false;
    box.dataset.arm = stored.arm || "";
    if (!stored.arm || !stored.policy_updated) {
      box.textContent = `Your ${type} of “${name}” updated no arm: ${stored.note}`;
      return;
    }
    const find = (policy) => policy && policy.arms.find((a) => a.arm === stored.arm);
    const was = find(before);
    const now = find(after);
    let text = `Your ${type} of “${name}” gave ${stored.arm} reward ${stored.reward}`;
    if (was && now) {
      text += `: posterior mean ${fmt(was.expected_reward)} → ${fmt(now.expected_reward)}`;
    }
    box.textContent = `${text}.`;
  }

  // The session's movement: each arm's chance of serving the next list before and after this
  // feedback, and why the list that came may be another arm's. Thompson Sampling draws the arm
  // of every list from the posteriors; a like raises the chance of the arm that served the liked
  // film, it does not force that arm.
  function showMovement(stored, type, before, after, next) {
    const box = $("movement");
    const body = $("movement-body");
    body.replaceChildren();
    if (!stored.arm || !stored.policy_updated || !before || !after) {
      box.hidden = true;
      return;
    }
    const was = new Map(before.arms.map((a) => [a.arm, chance(a)]));
    for (const arm of after.arms) {
      const row = el("tr");
      row.dataset.arm = arm.arm;
      const name = el("th", "arm-name", arm.arm);
      name.scope = "row";
      if (arm.arm === stored.arm) name.append(" ", el("span", "badge rated", type));
      if (!next.cold_start && arm.arm === next.arm) {
        name.append(" ", el("span", "badge", "drawn"));
      }
      row.append(name);
      const old = was.get(arm.arm);
      const cellBefore = el("td", "num chance-before", old === undefined ? "—" : pct(old));
      const cellAfter = el("td", "num chance-after", pct(chance(arm)));
      if (old !== undefined) {
        cellBefore.dataset.value = String(old);
        const delta = chance(arm) - old;
        if (Math.abs(delta) >= 0.0005) {
          cellAfter.append(" ", el("span", delta > 0 ? "delta up" : "delta down",
                                   `${delta > 0 ? "+" : "−"}${(100 * Math.abs(delta)).toFixed(1)}`));
        }
      }
      cellAfter.dataset.value = String(chance(arm));
      row.append(cellBefore, cellAfter);
      body.append(row);
    }
    const rated = stored.arm;
    const ratedAfter = after.arms.find((a) => a.arm === rated);
    const change = ratedAfter && was.has(rated)
      ? chance(ratedAfter) - was.get(rated) : 0;
    const moved = change > 0.0005 ? "raised" : change < -0.0005 ? "lowered" : "barely moved";
    // /policy names the policy's class ("ThompsonSampling"; "thompson" before the rewrite).
    const thompson = ["ThompsonSampling", "thompson"].includes(after.policy);
    const how = thompson ? "Thompson Sampling from all the arms' posteriors"
      : `the ${after.policy} policy from what every arm has earned`;
    let text = `Every list's arm is drawn by ${how}, so your ${type} ${moved} ${rated}'s chance `
      + "of serving your next list but does not decide it. ";
    const nextArms = next.arm.split("+");  // a multileaved list names its arms "a+b"
    if (next.cold_start) {
      text += `This list is the cold-start ${next.arm} list, outside the policy.`;
    } else if (nextArms.length > 1) {
      text += `This time the draw multileaved ${nextArms.join(" and ")} (that set's chance: `
        + `${pct(next.propensity)})`
        + (nextArms.includes(rated) ? `, ${rated} among them.` : `, not ${rated}.`);
    } else if (next.arm === rated) {
      text += `This time the draw fell on ${rated} again (its chance when drawn: `
        + `${pct(next.propensity)}).`;
    } else {
      text += `This time the draw fell on ${next.arm} (its chance when drawn: `
        + `${pct(next.propensity)}), not on ${rated}: a ${type} of one arm's film does not `
        + "force that arm.";
    }
    $("movement-text").textContent = text;
    box.hidden = false;
  }

  function summarise(reaction, previous, next) {
    if (!previous) return "";
    const arms = previous.arm === next.arm ? ""
      : ` (The new list came from ${next.arm}; the previous one from ${previous.arm}.)`;
    const now = new Map(next.items.map((i) => [i.movie_id, i.position]));
    const alike = previous.items.filter((i) => i.movie_id !== reaction.movie.movie_id
      && sharedGenres(i.genres, reaction.movie.genres).length);
    if (!alike.length) return `None of the other movies shared its genres.${arms}`;
    const down = alike.filter((i) => !now.has(i.movie_id) || now.get(i.movie_id) > i.position);
    const up = alike.filter((i) => now.has(i.movie_id) && now.get(i.movie_id) < i.position);
    return reaction.type === "dislike"
      ? `${down.length} of its ${alike.length} look-alikes moved down or out of the list.${arms}`
      : `${up.length} of its ${alike.length} look-alikes moved up.${arms}`;
  }

  // ------------------------------------------------------------------ policy
  async function refreshPolicy(servedArm) {
    showPolicy(await api("GET", "/policy"), servedArm);
  }

  function showPolicy(policy, servedArm) {
    renderPolicy(policy, state.policy, servedArm);
    state.policy = policy;
  }

  function renderPolicy(policy, previous, servedArm) {
    const old = new Map(previous ? previous.arms.map((a) => [a.arm, a]) : []);
    const servedNode = $("served-arm");
    // A cold-start list names its arm (the cold_start_arm setting) in the slate itself.
    const coldArm = state.slate && state.slate.cold_start ? state.slate.arm : null;
    servedNode.textContent = servedArm
      || (coldArm ? `${coldArm} (cold start, outside the policy)` : "—");
    servedNode.dataset.arm = servedArm || "";
    const served = servedArm && policy.arms.find((a) => a.arm === servedArm);
    $("served-propensity").textContent = state.slate && !state.slate.cold_start
      ? `(chosen with probability ${pct(state.slate.propensity)})` : "";

    const body = $("arms-body");
    body.replaceChildren();
    for (const arm of policy.arms) {
      const before = old.get(arm.arm);
      const row = el("tr");
      row.dataset.arm = arm.arm;
      if (served && arm.arm === served.arm) row.classList.add("served");

      const name = el("th", "arm-name", arm.arm);
      name.scope = "row";
      if (served && arm.arm === served.arm) name.append(" ", el("span", "badge", "served"));
      row.append(name);

      const posterior = el("td", "posterior");
      const mean = el("span", "mean num", fmt(arm.expected_reward));
      mean.dataset.value = String(arm.expected_reward);
      posterior.append(mean);
      if (before && before.expected_reward !== arm.expected_reward) {
        const delta = arm.expected_reward - before.expected_reward;
        posterior.append(" ", el("span", delta > 0 ? "delta up" : "delta down",
                                 `${delta > 0 ? "▲" : "▼"}${Math.abs(delta).toFixed(3)}`));
      }
      // Beta policies have a credible interval; the others show their estimate alone.
      const [low, high] = arm.credible_interval || [arm.expected_reward, arm.expected_reward];
      const interval = el("span", "interval num",
                          arm.credible_interval ? `${fmt(low)}–${fmt(high)}` : "");
      interval.dataset.low = String(low);
      interval.dataset.high = String(high);
      posterior.append(interval);
      const track = el("span", "track");
      track.setAttribute("aria-hidden", "true");
      const range = el("span", "range");
      range.style.left = `${100 * low}%`;
      range.style.width = `${100 * Math.max(high - low, 0.005)}%`;
      const dot = el("span", "dot");
      dot.style.left = `${100 * arm.expected_reward}%`;
      track.append(range, dot);
      posterior.append(track);
      row.append(posterior);

      const counts = el("td", "counts num", arm.successes == null
        ? `${arm.outcomes}` : `${arm.successes} / ${arm.failures}`);
      counts.dataset.successes = String(arm.successes);
      counts.dataset.failures = String(arm.failures);
      row.append(counts);
      const pulls = el("td", "pulls num", arm.pulls);
      row.append(pulls);
      row.append(el("td", "chance num", pct(chance(arm))));

      if (before) {
        if (before.expected_reward !== arm.expected_reward) posterior.classList.add("changed");
        if (before.successes !== arm.successes || before.failures !== arm.failures) {
          counts.classList.add("changed");
        }
        if (before.pulls !== arm.pulls) pulls.classList.add("changed");
      }
      body.append(row);
    }
    const window = Math.round(policy.reward_window_s / 60);
    $("policy-meta").textContent = `Policy ${policy.policy}, version `
      + `${policy.policy_version}, reward window ${window} min; `
      + `updated ${new Date().toLocaleTimeString()}.`;
  }

  // ------------------------------------------------------------------ a newcomer's genres
  // A user the arms do not know gets the cold-start arm's list; PUT /users/{id}/preferences
  // puts the genres they pick first. The picker shows only for such a user.
  async function showGenrePicker(slate) {
    const form = $("genre-form");
    if (!slate.cold_start) {
      form.hidden = true;
      return;
    }
    $("genre-help").textContent = `The arms do not know this user yet, so the list is `
      + `${slate.arm}'s; the genres you pick come first.`;
    const prefs = await api("GET", `/users/${state.userText}/preferences`);
    const chosen = new Set(prefs.genres);
    const options = $("genre-options");
    options.replaceChildren();
    for (const genre of prefs.available) {
      const label = el("label", "genre-option");
      const box = el("input");
      box.type = "checkbox";
      box.name = "genre";
      box.value = genre;
      box.checked = chosen.has(genre);
      label.append(box, genre);
      options.append(label);
    }
    form.hidden = false;
  }

  async function onSaveGenres(event) {
    event.preventDefault();
    if (state.busy) return;
    clearError();
    const genres = Array.from($("genre-options").querySelectorAll("input:checked"))
      .map((box) => box.value);
    setBusy(true);
    $("save-genres").disabled = true;
    try {
      try {
        await api("PUT", `/users/${state.userText}/preferences`, JSON.stringify({ genres }));
      } catch (err) {
        showError(err, `your genres (${genres.join(", ") || "none"}) may not have been saved`);
        return;
      }
      const { slate } = await loadRecommendations(null);
      setStatus(genres.length
        ? `Saved: ${genres.join(", ")}. The list now puts these genres first.`
        : `Cleared your genres: the list is ${slate.arm}'s again.`);
      if (!slate.cold_start) $("genre-form").hidden = true;
    } catch (err) {
      showError(err);
    } finally {
      setBusy(false);
      $("save-genres").disabled = false;
    }
  }

  // ------------------------------------------------------------------ wiring
  function readForm() {
    const userText = $("user-id").value.trim();
    const kText = $("k").value.trim();
    // Range checks are the API's (its 422 message is shown); here only the shape.
    if (!/^\d+$/.test(userText)) throw new Error("User id must be a whole number, e.g. 196.");
    if (!/^\d+$/.test(kText)) {
      const most = state.facts ? ` from 1 to ${state.facts.max_k}` : "";
      throw new Error(`Movies must be a whole number${most}.`);
    }
    return { userText: userText.replace(/^0+(?=\d)/, ""), k: kText.replace(/^0+(?=\d)/, "") };
  }

  async function onSubmit(event) {
    if (event) event.preventDefault();
    if (state.busy) return;
    clearError();
    let form;
    try {
      form = readForm();
    } catch (err) {
      showError(err);
      $("user-id").focus();
      return;
    }
    setBusy(true);
    try {
      // The new user and k become the page's only with their list: a change that fails (a
      // 422 for user 0 or k 0, or no service) leaves the list shown working for its own user
      // and k (likes sent, pushes shown), under the error, with the form as typed to correct.
      // Committed before the request, they had left that list dead: likes sent nothing, or
      // were stored while the page showed an error (found by attack).
      let fresh;
      try {
        fresh = await fetchSlate(form.userText, form.k);
      } catch (err) {
        showError(err, describeChange(form));
        return;
      }
      const slate = adoptList(form, fresh);
      setStatus(`${slate.items.length} movies for user ${state.userText}.`);
      // The policy panel and the genre picker each on their own: a failure says which did not
      // come; the list, its stream and its likes are the new user's already.
      try {
        await refreshPolicy(slate.cold_start ? null : slate.arm);
      } catch (err) {
        showError(err, "the policy panel was not refreshed");
      }
      try {
        await showGenrePicker(slate);
      } catch (err) {
        showError(err, `the genres of user ${state.userText} were not loaded`);
      }
    } finally {
      setBusy(false);
    }
  }

  // The list's user and k become the page's with all that follows them: the URL, the heading,
  // the live stream, the genre picker hidden (showGenrePicker shows the new user's). At once,
  // before the policy panel and the picker are asked for: when one of those failed, the stream
  // stayed the old user's under the new user's list, the page said "Live", a like waited
  // PUSH_WAIT_MS for a push that could not come, and feedback sent elsewhere never showed
  // (found by attack).
  function adoptList(form, fresh) {
    state.userText = form.userText;
    state.k = form.k;
    const url = new URL(window.location.href);
    url.searchParams.set("user", state.userText);
    window.history.replaceState(null, "", url);
    $("genre-form").hidden = true;
    const { slate } = showSlate(fresh, null);
    watchStream();
    return slate;
  }

  // "the change to user 6 was not made", for a change of user and/or k that failed.
  function describeChange(form) {
    const what = [];
    if (form.userText !== state.userText) what.push(`user ${form.userText}`);
    if (String(form.k) !== String(state.k)) what.push(`${form.k} movies`);
    return what.length ? `the change to ${what.join(", ")} was not made`
      : `the list of user ${form.userText} was not loaded`;
  }

  function onListClick(event) {
    const button = event.target.closest("button[data-feedback]");
    if (!button || button.disabled) return;
    sendFeedback(Number(button.dataset.movieId), button.dataset.feedback, button);
  }

  // ------------------------------------------------------------------ live push
  // GET /users/{id}/stream (Server-Sent Events) replaces polling /policy: after each feedback
  // of the user shown, sent from this page or from anywhere else, the service pushes the next
  // list and the policy panel. EventSource reconnects by itself and sends Last-Event-ID, so
  // the service replays what was missed; while it is down the page says so, and its own likes
  // fetch the list and the policy themselves.
  function setLive(text, ok) {
    const box = $("live-status");
    box.textContent = text;
    box.dataset.live = ok ? "on" : "off";
  }

  function awaitPush(movieId, type) {
    if (!live.ready) return Promise.resolve(null);
    return new Promise((resolve) => {
      const waiter = { movieId, type, resolve };
      live.waiters.push(waiter);
      window.setTimeout(() => settleWaiter(waiter, null), PUSH_WAIT_MS);
    });
  }

  function settleWaiter(waiter, update) {
    const i = live.waiters.indexOf(waiter);
    if (i < 0) return;
    live.waiters.splice(i, 1);
    if (!update) {
      // The page fetches the list itself; when this feedback's push arrives after all, it
      // is not taken for feedback sent elsewhere (its list would replace the one the page
      // just showed and explained: found by a test on a loaded machine).
      live.late.push({ movieId: waiter.movieId, type: waiter.type });
      if (live.late.length > LATE_KEPT) live.late.shift();
    }
    waiter.resolve(update);
  }

  // The wait of a feedback whose POST failed: left waiting, it took the push of the same like
  // sent again once the service was back, which then waited its full PUSH_WAIT_MS.
  function forgetWaiter(movieId, type) {
    const waiter = live.waiters.find((w) => w.movieId === movieId && w.type === type);
    if (!waiter) return;
    live.waiters.splice(live.waiters.indexOf(waiter), 1);
    waiter.resolve(null);
  }

  // The push of this page's own feedback whose POST got no answer (``lost``, from
  // live.unanswered): it was stored after all. Shown as such, not as "feedback sent
  // elsewhere", and no longer listed as perhaps not stored.
  function showStoredAfterAll(update, lost) {
    const i = notDone.indexOf(lost.undone);
    if (i >= 0) notDone.splice(i, 1);
    serviceReached();  // a push is an answer
    const { slate } = showSlate(update.recommendations, null);
    showPolicy(update.policy, slate.cold_start ? null : slate.arm);
    setStatus(`Your ${lost.type} of “${lost.name}” was stored after all (its answer was lost `
      + `on the way): a new list from ${slate.cold_start ? "the cold-start list" : slate.arm}.`);
  }

  // The entry of ``list`` (live.late or live.unanswered) whose feedback ``update`` pushes,
  // taken out of it; null if none.
  function takeOwn(list, update) {
    const i = list.findIndex((w) => update.feedback.some(
      (f) => f.movie_id === w.movieId && f.feedback_type === w.type));
    return i < 0 ? null : list.splice(i, 1)[0];
  }

  function onUpdate(event) {
    let update;
    try {
      update = JSON.parse(event.data);
    } catch (_err) {
      return;
    }
    if (String(update.user_id) !== state.userText) return;
    const mine = live.waiters.find((w) => update.feedback.some(
      (f) => f.movie_id === w.movieId && f.feedback_type === w.type));
    if (mine) {
      settleWaiter(mine, update);  // sendFeedback shows it, with the movement
      return;
    }
    if (takeOwn(live.late, update)) return;  // sendFeedback showed the list it fetched itself
    const lost = takeOwn(live.unanswered, update);
    if (lost) {
      showStoredAfterAll(update, lost);
      return;
    }
    // Feedback sent from elsewhere (another tab, device or client).
    const { slate } = showSlate(update.recommendations, null);
    showPolicy(update.policy, slate.cold_start ? null : slate.arm);
    const what = update.feedback.map((f) => `${f.feedback_type} of movie ${f.movie_id}`);
    setStatus(`Updated live after feedback sent elsewhere (${what.join(", ")}): `
      + `a new list from ${slate.cold_start ? "the cold-start list" : slate.arm}.`);
  }

  function watchStream() {
    const key = `${state.userText}/${state.k}`;
    if (live.key === key && live.source) return;
    if (live.source) live.source.close();
    live.key = key;
    live.ready = false;
    setLive("Live updates: connecting…", false);
    const source = new EventSource(`/users/${state.userText}/stream?k=${state.k}`);
    live.source = source;
    source.addEventListener("ready", () => {
      live.ready = true;
      serviceReached();
      setLive("Live: new lists and the policy arrive as feedback is sent, from anywhere.", true);
    });
    source.addEventListener("update", onUpdate);
    source.addEventListener("unavailable", () => {
      setLive("Live updates paused: the service's store is unavailable; reconnecting…", false);
    });
    source.addEventListener("error", () => {
      live.ready = false;
      for (const waiter of live.waiters.slice()) settleWaiter(waiter, null);
      if (source.readyState === EventSource.CLOSED) {
        setLive("Live updates are off (the service refused the stream, e.g. too many open); "
          + "lists and the policy refresh after your own feedback. Reload to retry.", false);
      } else {
        setLive("Live updates interrupted; reconnecting (nothing sent meanwhile is lost)…", false);
      }
    });
  }

  // What the page says about the service, from the service (GET /demo/facts), read once: the
  // page had MovieLens's 943 users, the popularity list and a max of 100 written into it,
  // whatever the dataset and the settings (found by attack).
  async function loadFacts() {
    let facts;
    try {
      facts = await api("GET", "/demo/facts");
    } catch (err) {
      showError(err, "the service's users and slate size were not loaded");
      return;
    }
    state.facts = facts;
    $("k").max = String(facts.max_k);
    const users = facts.known_users === 0 ? "The arms know no user yet"
      // "between", not "1 to N": the known ids can have gaps (a retrain on new users).
      : `The arms know ${facts.known_users} users of the ${facts.dataset} data, ids between `
        + `${facts.first_user} and ${facts.last_user}`;
    $("user-help").textContent = facts.cold_start_arm
      ? `${users}; any other id gets the cold-start list (${facts.cold_start_arm}, outside the `
        + "policy)."
      : `${users}; the policy chooses an arm for any other id from its features.`;
  }

  document.addEventListener("DOMContentLoaded", async () => {
    const fromUrl = new URL(window.location.href).searchParams.get("user");
    if (fromUrl && /^\d+$/.test(fromUrl)) $("user-id").value = fromUrl;
    $("user-form").addEventListener("submit", onSubmit);
    $("genre-form").addEventListener("submit", onSaveGenres);
    $("recs").addEventListener("click", onListClick);
    await loadFacts();
    onSubmit(null);
  });
})();
