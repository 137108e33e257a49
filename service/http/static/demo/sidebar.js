// The coupons tab of the WeCom chat sidebar, behaving as the mall's own page does
// (docs/CONTRACT.md, "The mall's sidebar page, as it behaves"):
// - it GETs through the mall's router with page, coupon_type, client=work and type=17;
// - on result === 1 it reads res.data.data as {data, last_page, per_page}, shows data, takes its
//   tabs from res.data.search_array (a tab's index is its coupon_type), and asks for the next
//   page until page >= last_page or fewer rows than per_page came back;
// - on result !== 1 it shows msg as a toast; on a non-2xx status, an empty list and no message;
// - a coupon shows deduct and enough (coupon_method 1) or discount and enough (2),
//   coupon_type_name, name, and time_start-time_end.
// The demo adds only what the mall's page gets from elsewhere: who is asking (a token per demo
// person, and the contact for a staff token), and a status other than unused.
"use strict";

(function () {
  const state = {
    route: "", path: "", people: [], who: null,
    status: "", couponType: 0, page: 1,
    loading: false, done: false, generation: 0, tabs: "", observer: null,
  };
  const $ = (id) => document.getElementById(id);

  function toast(msg) {
    const box = $("toast");
    box.textContent = msg;
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.hidden = true; }, 3000);
  }

  function requestUrl(page) {
    const params = new URLSearchParams({
      i: String(state.who.uniacid), type: "17", route: state.route,
      page: String(page), coupon_type: String(state.couponType), client: "work",
    });
    if (state.status) params.set("status_request", state.status);
    if (state.who.user_id) params.set("user_id", state.who.user_id);
    return state.path + "?" + params.toString();
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function card(item) {
    const coupon = item.belongs_to_coupon;
    const li = el("li", "coupon");
    li.dataset.id = String(item.id);
    const value = el("div", "value");
    if (coupon.coupon_method === 2) {
      value.append(el("strong", "amount", coupon.discount + "折"));
    } else {
      value.append(el("strong", "amount", "¥" + coupon.deduct));
    }
    value.append(el("span", "enough", coupon.enough > 0 ? "满" + coupon.enough + "可用" : "无门槛"));
    const info = el("div", "info");
    const title = el("div", "title");
    title.append(el("span", "type", coupon.coupon_type_name), el("span", "name", coupon.name));
    info.append(title, el("div", "time", item.time_start + "-" + item.time_end));
    li.append(value, info);
    return li;
  }

  function renderTabs(labels) {
    const key = labels.join("|");
    if (key === state.tabs) return;
    state.tabs = key;
    const nav = $("tabs");
    nav.replaceChildren();
    labels.forEach((label, index) => {
      const tab = el("button", "tab", label);
      tab.type = "button";
      tab.setAttribute("role", "tab");
      tab.dataset.type = String(index);
      tab.addEventListener("click", () => {
        state.couponType = index;
        restart();
      });
      nav.append(tab);
    });
    markTab();
  }

  function markTab() {
    for (const tab of $("tabs").children) {
      const on = tab.dataset.type === String(state.couponType);
      tab.classList.toggle("active", on);
      tab.setAttribute("aria-selected", on ? "true" : "false");
    }
  }

  function finish(text) {
    state.done = true;
    $("more").textContent = text;
  }

  async function load() {
    if (state.loading || state.done || state.who === null) return;
    state.loading = true;
    const generation = state.generation;
    const page = state.page;
    let res = null;
    try {
      const resp = await fetch(requestUrl(page), {
        headers: { Authorization: "Bearer " + state.who.token },
      });
      if (resp.ok) res = await resp.json();
    } catch (err) {
      res = null;
    }
    if (generation !== state.generation) return; // the tab or the person changed meanwhile
    state.loading = false;
    if (res === null) {
      // Any non-2xx status: an empty list and no word of why, as the mall's page does.
      $("list").replaceChildren();
      finish("");
      return;
    }
    if (res.result !== 1) {
      toast(res.msg);
      finish("");
      return;
    }
    const paginator = res.data.data;
    renderTabs(res.data.search_array);
    const list = $("list");
    for (const item of paginator.data) list.append(card(item));
    if (page >= paginator.last_page || paginator.data.length < paginator.per_page) {
      finish(list.children.length === 0 ? "暂无优惠券" : "没有更多了");
      return;
    }
    state.page = page + 1;
    if (nearBottom()) {
      load();
    } else {
      // Re-arm the observer: it reports only changes, and a scroll that brings the sentinel back
      // before the next frame would otherwise look like no change at all (it was in view when
      // this page was asked for), and the list would stop here.
      state.observer.unobserve($("sentinel"));
      state.observer.observe($("sentinel"));
    }
  }

  function nearBottom() {
    const rect = $("sentinel").getBoundingClientRect();
    return rect.top <= window.innerHeight + 200;
  }

  function restart() {
    state.generation += 1;
    state.page = 1;
    state.loading = false;
    state.done = false;
    $("list").replaceChildren();
    $("more").textContent = "加载中…";
    markTab();
    window.scrollTo(0, 0);
    load();
  }

  async function start() {
    const resp = await fetch("/demo/people.json");
    const demo = await resp.json();
    state.route = demo.route;
    state.path = demo.path;
    state.people = demo.people;
    const who = $("who");
    for (const person of demo.people) {
      const option = el("option", "", person.label);
      option.value = person.key;
      who.append(option);
    }
    state.who = demo.people[0];
    who.addEventListener("change", () => {
      state.who = state.people.find((p) => p.key === who.value);
      restart();
    });
    $("status").addEventListener("change", (event) => {
      state.status = event.target.value;
      if (state.status && state.couponType === 10) state.couponType = 0; // no 快过期 tab there
      restart();
    });
    state.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) load();
    }, { rootMargin: "200px" });
    state.observer.observe($("sentinel"));
    state.couponType = 0;
    restart();
  }

  start();
})();
