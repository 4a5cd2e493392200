// Make the Jupyter widgets HTML manager work from the book's own copy, offline.
// 1. Its webpack chunks and icon fonts are looked up relative to the URL that
//    require.js gives its AMD module (and window.__jupyter_widgets_assets_path__):
//    widgets-require-config.js (loaded after require.js) maps the module to
//    _static/vendor/html-manager/ next to this file.
// 2. It typesets widget labels with the MathJax 2 API (MathJax.Hub.Queue); the
//    book uses MathJax 3, so provide that one call on top of MathJax 3.
(function () {
  var src = document.currentScript && document.currentScript.src;
  if (src) {
    var base = src.substring(0, src.lastIndexOf("/") + 1) + "vendor/html-manager";
    window.__jupyter_widgets_assets_path__ = base + "/";
    window.__book_widgets_base__ = base;
  }
  document.addEventListener("DOMContentLoaded", function () {
    var mj = window.MathJax;
    if (!mj || mj.Hub || typeof mj.typesetPromise !== "function") {
      return;
    }
    mj.Hub = {
      Queue: function (command) {
        var element = command && command[2];
        if (!element) {
          return;
        }
        mj.startup.promise.then(function () {
          return mj.typesetPromise([element]);
        });
      },
    };
  });
})();
