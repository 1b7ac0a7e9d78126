/* Small progressive enhancements for the demo project. */
(function () {
  "use strict";

  function markCurrentNavLink() {
    var links = document.querySelectorAll(".site-header nav a");
    for (var i = 0; i < links.length; i++) {
      if (links[i].getAttribute("href") === window.location.pathname) {
        links[i].setAttribute("aria-current", "page");
      }
    }
  }

  function showFileSize() {
    var input = document.querySelector("input[type=file]");
    var output = document.getElementById("file-size");
    if (!input || !output) {
      return;
    }
    input.addEventListener("change", function () {
      var file = input.files && input.files[0];
      output.textContent = file ? file.size + " bytes" : "";
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    markCurrentNavLink();
    showFileSize();
    document.documentElement.classList.add("js");
  });
})();
