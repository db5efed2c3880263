/* inventory: the quickstart's native demo, a small stock service in plain C that knows nothing
 * about Loupe: no library, no agent, nothing added for it. The quickstart builds it with
 * `cc -g -O2` and runs `loupe sidecar` beside it, which reads the global `g_stock` (a watch
 * point) and traps the entry of `reserve` (a probe point) by pid, as inventory.points.toml
 * declares; nothing here changes when it does.
 *
 * It prints one ready line ("inventory ready pid=N"), then reserves stock for a synthetic order
 * about 50 times a second, restocking an item that runs out, until it is stopped. */
#include <stdio.h>
#include <unistd.h>

struct item {
    const char *sku;
    long price_cents;
    int on_hand;
};

struct warehouse {
    const char *name;
    /* A credential, as real services keep in memory: its name makes every snapshot redact it. */
    const char *supplier_token;
    long reservations;
    long restocks;
    struct item items[3];
};

struct warehouse g_stock = {
    "eu-west-1",
    "sk_live_51HqLyjWDarjtT1zdp7dc",
    0,
    0,
    {{"sku-kettle", 3999, 120}, {"sku-teapot", 2599, 80}, {"sku-mug", 899, 300}},
};

/* Takes `quantity` of `item` for order `order_id`; 0 when there is not enough. Kept out of
 * line, as a function called from many places would be (its one caller here would otherwise
 * absorb it at -O2, leaving no entry to trap). */
__attribute__((noinline)) int reserve(struct item *item, int quantity, long order_id) {
    if (item->on_hand < quantity || order_id <= 0) {
        return 0;
    }
    item->on_hand -= quantity;
    g_stock.reservations++;
    return 1;
}

int main(void) {
    printf("inventory ready pid=%ld\n", (long)getpid());
    fflush(stdout);
    for (long order_id = 1;; order_id++) {
        struct item *item = &g_stock.items[order_id % 3];
        if (!reserve(item, 1 + (int)(order_id % 4), order_id)) {
            item->on_hand += 100;
            g_stock.restocks++;
        }
        usleep(20000);
    }
}
