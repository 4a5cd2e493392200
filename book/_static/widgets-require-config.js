// Loaded between require.js and the widget manager: resolve the manager's AMD
// module to the book's own copy (see widgets-offline.js), never to a CDN.
if (window.require && window.__book_widgets_base__) {
  window.require.config({
    paths: { "@jupyter-widgets/html-manager/dist": window.__book_widgets_base__ },
  });
}
