// Installed by tests/browser_probe.py in every frame before any script of the page runs.
// Whatever a payload manages to run reports itself through the harness binding: the hook every
// corpus payload calls (window.__xss(id)), the dialog and popup functions the public payloads
// call (alert, confirm, prompt, print, open), and code built from strings (eval, Function,
// setTimeout/setInterval with a string). The probe also watches every script V8 compiles, so a
// payload that calls none of these is still seen.
(() => {
  const send = window.__aggregator_harness_report;
  const report = (kind, args) => {
    let detail;
    try {
      detail = Array.from(args, (a) => String(a)).join(" ").slice(0, 300);
    } catch (e) {
      detail = "(unprintable)";
    }
    try {
      send(kind, detail);
    } catch (e) {
      // the binding is gone (a frame without it): the compiled-script watch still sees it
    }
  };
  const pin = (target, name, value) => {
    try {
      Object.defineProperty(target, name, { value, writable: false, configurable: false });
    } catch (e) {
      // already pinned in this frame
    }
  };
  pin(window, "__xss", function () {
    report("__xss", arguments);
  });
  pin(window, "alert", function () {
    report("alert", arguments);
  });
  pin(window, "confirm", function () {
    report("confirm", arguments);
    return false;
  });
  pin(window, "prompt", function () {
    report("prompt", arguments);
    return null;
  });
  pin(window, "print", function () {
    report("print", arguments);
  });
  pin(window, "open", function () {
    report("open", arguments);
    return null;
  });
  // Playwright runs its own evaluations in the page through window.eval: those are not
  // reported (else reporting would feed itself), everything else is.
  const harness = /__playwright|utilityScript|deliverResult|aggregator-harness/;
  const realEval = window.eval;
  pin(window, "eval", function (source) {
    if (!harness.test(String(source))) report("eval", arguments);
    return realEval(source);
  });
  const RealFunction = window.Function;
  pin(
    window,
    "Function",
    new Proxy(RealFunction, {
      apply(target, self, args) {
        report("Function", args);
        return Reflect.apply(target, self, args);
      },
      construct(target, args) {
        report("Function", args);
        return Reflect.construct(target, args);
      },
    }),
  );
  for (const name of ["setTimeout", "setInterval"]) {
    const real = window[name];
    pin(window, name, function (handler, ...rest) {
      if (typeof handler !== "function") report(name + "-string", [handler]);
      return real.call(this, handler, ...rest);
    });
  }
  pin(window, "__aggregator_harness_installed", true);
})();
//# sourceURL=aggregator-harness-instrument.js
