/* Compiled with darknet's header, outside -std=c11 -Werror. */
#include "darknet_ref.h"

#include <darknet.h>
#include <stdlib.h>
#include <string.h>

/* Exported by libdarknet but not declared in darknet.h. */
image load_image_stb(char *filename, int channels);

struct dnref {
    network *net;
};

dnref *dnref_open(const char *cfg, const char *weights)
{
    dnref *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->net = load_network((char *)cfg, (char *)weights, 0);
    if (!r->net) {
        free(r);
        return NULL;
    }
    set_batch_network(r->net, 1);
    return r;
}

void dnref_close(dnref *r)
{
    if (!r)
        return;
    free_network(r->net);
    free(r);
}

int dnref_layer_count(const dnref *r)
{
    return r->net->n;
}

int dnref_input_size(const dnref *r, int *c, int *h, int *w)
{
    *c = r->net->c;
    *h = r->net->h;
    *w = r->net->w;
    return 0;
}

void dnref_forward(dnref *r, float *input)
{
    network_predict(r->net, input);
}

const float *dnref_layer_output(const dnref *r, int i, int *n)
{
    layer l = r->net->layers[i];
    *n = l.outputs;
    return l.output;
}

int dnref_load_letterboxed(const dnref *r, const char *path, float *dst, int *w, int *h)
{
    image im = load_image_stb((char *)path, 3);
    if (!im.data)
        return -1;
    image sized = letterbox_image(im, r->net->w, r->net->h);
    memcpy(dst, sized.data, (size_t)sized.w * sized.h * sized.c * sizeof(float));
    *w = im.w;
    *h = im.h;
    free_image(im);
    free_image(sized);
    return 0;
}

static float clampf(float v, float lo, float hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

int dnref_detect(dnref *r, const char *path, float thresh, float nms, dnref_det *out, int cap)
{
    image im = load_image_stb((char *)path, 3);
    if (!im.data)
        return -1;
    image sized = letterbox_image(im, r->net->w, r->net->h);
    network_predict(r->net, sized.data);
    int nboxes = 0;
    detection *dets = get_network_boxes(r->net, im.w, im.h, thresh, .5f, 0, 1, &nboxes);
    layer last = r->net->layers[r->net->n - 1];
    if (nms > 0)
        do_nms_sort(dets, nboxes, last.classes, nms);
    int n = 0;
    for (int i = 0; i < nboxes; i++) {
        for (int c = 0; c < last.classes; c++) {
            if (!(dets[i].prob[c] > thresh) || n >= cap)
                continue;
            box b = dets[i].bbox;
            out[n].cls = c;
            out[n].prob = dets[i].prob[c];
            out[n].x0 = clampf((b.x - b.w / 2) * im.w, 0, im.w - 1);
            out[n].x1 = clampf((b.x + b.w / 2) * im.w, 0, im.w - 1);
            out[n].y0 = clampf((b.y - b.h / 2) * im.h, 0, im.h - 1);
            out[n].y1 = clampf((b.y + b.h / 2) * im.h, 0, im.h - 1);
            n++;
        }
    }
    free_detections(dets, nboxes);
    free_image(im);
    free_image(sized);
    return n;
}
