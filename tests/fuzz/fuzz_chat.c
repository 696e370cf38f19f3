/* Chat formatting: the input is a chat template and messages, NUL-separated (template, role, content,
   role, content...).  Checks: the size query matches, every smaller buffer gets a NUL-terminated
   prefix of the full text, never a byte past cap. */
/* part of fuzz.c */

static int fz_one_chat(const uint8_t *in, size_t n) {
    mllm_model *m;
    mllm_chat_message msgs[16];
    char *buf, *parts[33];
    int n_parts = 0, n_msgs, need, cap;
    size_t i, start = 0;
    if (n > 8192) return 0;
    buf = (char *)malloc(n + 1);
    memcpy(buf, in, n);
    buf[n] = 0;
    for (i = 0; i <= n && n_parts < 33; i++)
        if (i == n || buf[i] == 0) { parts[n_parts++] = buf + start; buf[i] = 0; start = i + 1; }
    m = MLLM__CAST(mllm_model *, calloc(1, sizeof *m));   /* only chat_template is read */
    m->chat_template = n_parts > 0 && parts[0][0] ? parts[0] : NULL;
    n_msgs = (n_parts - 1) / 2;
    for (i = 0; i < (size_t)n_msgs; i++) { msgs[i].role = parts[1 + 2 * i]; msgs[i].content = parts[2 + 2 * i]; }
    need = mllm_chat_format(m, msgs, n_msgs, NULL, 0);
    if (need > 0) {
        char *full = (char *)malloc((size_t)need);
        FZ_ASSERT(mllm_chat_format(m, msgs, n_msgs, full, need) == need && full[need - 1] == 0 && strlen(full) == (size_t)need - 1);
        for (cap = 1; cap < need; cap += 1 + cap / 3) {
            char *part = (char *)malloc((size_t)cap);   /* exact size: ASan catches a write past cap */
            FZ_ASSERT(mllm_chat_format(m, msgs, n_msgs, part, cap) == need);
            FZ_ASSERT(part[cap - 1] == 0 && !memcmp(part, full, (size_t)cap - 1));
            free(part);
        }
        free(full);
    } else {
        FZ_ASSERT(need == MLLM_ERR_UNSUPPORTED || need == MLLM_ERR_INVALID_ARG);
    }
    free(m);
    free(buf);
    return 0;
}
