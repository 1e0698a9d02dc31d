// Loads the OpenAPI document with the token, then lets Swagger UI send the token on "Try it out".
"use strict";
window.addEventListener("load", async () => {
  const target = document.getElementById("swagger-ui");
  try {
    const spec = await ExecutorAuth.json(document.body.dataset.spec);
    window.ui = SwaggerUIBundle({
      spec: spec,
      dom_id: "#swagger-ui",
      deepLinking: true,
      requestInterceptor: (request) => {
        const token = ExecutorAuth.token();
        if (token && !request.headers.Authorization) request.headers.Authorization = "Bearer " + token;
        return request;
      },
    });
  } catch (error) {
    target.textContent = "Cannot load the API document: " + error.message;
  }
});
