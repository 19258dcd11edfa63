// The fused char-LSTM on CPU: one LSTM step per node of the prefix trie of a batch's tokens.
//
// Dimensions: C chars, H hidden, U ids, n batch-trie nodes, k internal nodes (>= 1 child),
//             D trie depth (longest token). Gate order i, f, g, o as torch.nn.LSTM.
//   gate_table G [C, 4H]   char_emb @ W_ih^T + b_ih + b_hh, one row per char
//   weight_hh  W [4H, H]
//   h          [U, H]      state after each id's last char (0 for a zero-length token)
//   node_act   [n, 4H]     sigmoid(i), sigmoid(f), tanh(g), sigmoid(o) of every node (saved for backward)
//   node_c     [n, H]      cell state of every node (saved for backward)
//
// Forward, level by level: gates[node] = G[char] + (h[parent] @ W^T). The product depends
// only on the parent, so it is a GEMM over the previous level's internal nodes (leaves have
// no children and need none); a level runs as parallel chunks of parents with their children.
// Backward, level by level in reverse: a node's dh and dc collect its outputs' gradients plus
// its children's; the children's dgates summed per parent (S [k, 4H]) give the parents'
// dh = S @ W, and dW = S^T @ h_internal is one GEMM after the recurrence; dG is a
// scatter-add of dgates by char.
//
// Saving the activations and c (5H per node) lets backward skip recomputing the forward; h
// and tanh(c) are recomputed from them with one vectorised pass over all nodes.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <Python.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "trie.h"

namespace charfast {
namespace {

// Rows per parallel chunk for elementwise loops: ATen's grain (32768 elements), so small work runs inline.
int64_t row_grain(int64_t row_elements) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(row_elements, 1)); }

// The elementwise loops below are compiled for AVX-512, AVX2 and plain x86-64 and picked at
// load time (GCC function multiversioning), since extensions are built without -march flags.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CHARFAST_VECTORISED __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CHARFAST_VECTORISED
#endif

// tanh(x) = 2 sigmoid(2x) - 1: ATen's sigmoid is vectorised, its tanh much slower on CPU.
// Gate pre-activations of one node: i, f, o as they are, g doubled for that identity.
template <typename scalar_t>
CHARFAST_VECTORISED void preactivate_row(scalar_t* __restrict a, const scalar_t* __restrict g_row,
                                         const scalar_t* __restrict r_row, int64_t H) {
  if (r_row == nullptr) {
    for (int64_t j = 0; j < 4 * H; ++j) a[j] = g_row[j];
  } else {
    for (int64_t j = 0; j < 4 * H; ++j) a[j] = g_row[j] + r_row[j];
  }
  for (int64_t j = 2 * H; j < 3 * H; ++j) a[j] *= 2;
}

// After sigmoid: g = 2 s - 1 (kept in a), c = f * c_parent + i * g, and 2c for tanh(c).
template <typename scalar_t>
CHARFAST_VECTORISED void cell_state_row(scalar_t* __restrict a, const scalar_t* __restrict c_parent,
                                        scalar_t* __restrict c_row, scalar_t* __restrict two_c, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t g = 2 * a[2 * H + j] - 1;
    a[2 * H + j] = g;
    const scalar_t c = (c_parent == nullptr ? scalar_t(0) : a[H + j] * c_parent[j]) + a[j] * g;
    c_row[j] = c;
    two_c[j] = 2 * c;
  }
}

// h = o * tanh(c), from s = sigmoid(2c) in place.
template <typename scalar_t>
CHARFAST_VECTORISED void hidden_row(scalar_t* __restrict h_row, const scalar_t* __restrict o, int64_t H) {
  for (int64_t j = 0; j < H; ++j) h_row[j] = o[j] * (2 * h_row[j] - 1);
}

// One node's backward: dgates from dh, the carried dc and the saved activations; the
// node's dc * f replaces the carry for its parent to sum.
template <typename scalar_t>
CHARFAST_VECTORISED void cell_backward_row(const scalar_t* __restrict act, const scalar_t* __restrict t,
                                           const scalar_t* __restrict dh, const scalar_t* __restrict c_parent,
                                           scalar_t* __restrict carry, scalar_t* __restrict dg, int64_t H) {
  const scalar_t *i = act, *f = act + H, *g = act + 2 * H, *o = act + 3 * H;
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t dc = carry[j] + dh[j] * o[j] * (1 - t[j] * t[j]);
    const scalar_t cp = c_parent == nullptr ? scalar_t(0) : c_parent[j];
    dg[j] = dc * g[j] * i[j] * (1 - i[j]);
    dg[H + j] = dc * cp * f[j] * (1 - f[j]);
    dg[2 * H + j] = dc * i[j] * (1 - g[j] * g[j]);
    dg[3 * H + j] = dh[j] * t[j] * o[j] * (1 - o[j]);
    carry[j] = dc * f[j];
  }
}

template <typename scalar_t>
CHARFAST_VECTORISED void add_row(scalar_t* __restrict dst, const scalar_t* __restrict src, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] += src[j];
}

// Runs body(node_begin, node_end, rank_begin, rank_end) over trie level d in ONE parallel
// region (few regions keep OpenMP's barriers cheap when the CPU is shared). Depth-1 nodes
// (children of the root) are split directly (empty rank range); a deeper level is split by
// its parents, the internal nodes [rank_begin, rank_end) one level up, whose children are the
// contiguous nodes [node_begin, node_end). Each chunk does its own small GEMM, single-threaded
// inside the region; a chunk holds at least ~1M multiply-adds of them.
template <typename Body>
void for_level_chunks(const BatchTrie& trie, int64_t d, int64_t hidden, const Body& body) {
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 20) / (4 * hidden * hidden));
  if (d == 0) {
    at::parallel_for(trie.level_begin[0], trie.level_begin[1], grain,
                     [&](int64_t lo, int64_t hi) { body(lo, hi, int64_t{0}, int64_t{0}); });
  } else {
    at::parallel_for(trie.internal_level_begin[d - 1], trie.internal_level_begin[d], grain,
                     [&](int64_t lo, int64_t hi) { body(trie.child_begin[lo], trie.child_end[hi - 1], lo, hi); });
  }
}

template <typename scalar_t>
void trie_forward(const BatchTrie& trie, const at::Tensor& gate_table, const at::Tensor& weight_hh, at::Tensor& h_out,
                  at::Tensor& node_act, at::Tensor& node_c) {
  const int64_t H = weight_hh.size(1), H4 = 4 * H;
  at::Tensor node_h = at::empty({trie.n_nodes, H}, gate_table.options());          // [n, H]
  at::Tensor internal_h = at::empty({trie.n_internal(), H}, gate_table.options());  // [k, H]
  const at::Tensor weight_t = weight_hh.t();                                        // [H, 4H]
  const scalar_t* G = gate_table.data_ptr<scalar_t>();
  scalar_t* act = node_act.data_ptr<scalar_t>();
  scalar_t* c = node_c.data_ptr<scalar_t>();
  scalar_t* h = node_h.data_ptr<scalar_t>();
  scalar_t* hi = internal_h.data_ptr<scalar_t>();

  for (int64_t d = 0; d < trie.depth(); ++d) {
    for_level_chunks(trie, d, H, [&](int64_t begin, int64_t end, int64_t rank_begin, int64_t rank_end) {
      // recurrent [parents, 4H] = h @ W^T of this chunk's parents
      const at::Tensor recurrent =
          rank_end > rank_begin ? at::mm(internal_h.narrow(0, rank_begin, rank_end - rank_begin), weight_t) : at::Tensor();
      const scalar_t* rec = recurrent.defined() ? recurrent.data_ptr<scalar_t>() : nullptr;
      for (int64_t k = begin; k < end; ++k) {
        const scalar_t* r_row = rec == nullptr ? nullptr : rec + (trie.internal_rank[trie.parent[k]] - rank_begin) * H4;
        preactivate_row(act + k * H4, G + trie.chars[k] * H4, r_row, H);
      }
      node_act.narrow(0, begin, end - begin).sigmoid_();  // [m, 4H]: i, f, o; (g + 1) / 2
      for (int64_t k = begin; k < end; ++k) {
        cell_state_row(act + k * H4, trie.parent[k] < 0 ? nullptr : c + trie.parent[k] * H, c + k * H, h + k * H, H);
      }
      node_h.narrow(0, begin, end - begin).sigmoid_();  // [m, H]: sigmoid(2c)
      for (int64_t k = begin; k < end; ++k) {
        scalar_t* h_row = h + k * H;
        hidden_row(h_row, act + k * H4 + 3 * H, H);
        if (trie.internal_rank[k] >= 0) std::memcpy(hi + trie.internal_rank[k] * H, h_row, sizeof(scalar_t) * H);
      }
    });
  }
  scalar_t* out = h_out.data_ptr<scalar_t>();
  const int64_t n_ids = static_cast<int64_t>(trie.terminal.size());
  at::parallel_for(0, n_ids, row_grain(H), [&](int64_t lo, int64_t hi_row) {
    for (int64_t u = lo; u < hi_row; ++u) {
      if (trie.terminal[u] < 0) {
        std::fill(out + u * H, out + (u + 1) * H, scalar_t(0));
      } else {
        std::memcpy(out + u * H, h + trie.terminal[u] * H, sizeof(scalar_t) * H);
      }
    }
  });
}

template <typename scalar_t>
void trie_backward(const BatchTrie& trie, const at::Tensor& grad_h, const at::Tensor& weight_hh,
                   const at::Tensor& node_act, const at::Tensor& node_c, at::Tensor& grad_gate_table,
                   at::Tensor& grad_weight_hh) {
  const int64_t H = weight_hh.size(1), H4 = 4 * H, n = trie.n_nodes;
  const at::Tensor tanh_c = (node_c * 2).sigmoid_().mul_(2).sub_(1);  // [n, H] tanh(c), see preactivate_row
  at::Tensor dh = at::zeros({n, H}, node_c.options());                // [n, H] dLoss/dh of each node
  at::Tensor dc_carry = at::zeros({n, H}, node_c.options());          // [n, H] see below
  at::Tensor dgates = at::empty({n, H4}, node_c.options());           // [n, 4H] dLoss/d(pre-activation gates)
  at::Tensor child_sum = at::empty({trie.n_internal(), H4}, node_c.options());  // S [k, 4H]
  const scalar_t* act = node_act.data_ptr<scalar_t>();
  const scalar_t* c = node_c.data_ptr<scalar_t>();
  const scalar_t* tc = tanh_c.data_ptr<scalar_t>();
  scalar_t* dh_p = dh.data_ptr<scalar_t>();
  // dc_carry[node]: before the node's level runs, the sum of its children's dc * f (what
  // they pass back through c); after, the node's own dc * f, for its parent to sum.
  scalar_t* carry = dc_carry.data_ptr<scalar_t>();
  scalar_t* dg = dgates.data_ptr<scalar_t>();
  scalar_t* S = child_sum.data_ptr<scalar_t>();

  // Output gradients into their terminal nodes; serial because repeated ids share a node.
  const at::Tensor grad_h_c = grad_h.contiguous();
  const scalar_t* gh = grad_h_c.data_ptr<scalar_t>();
  for (int64_t u = 0; u < static_cast<int64_t>(trie.terminal.size()); ++u) {
    if (trie.terminal[u] >= 0) add_row(dh_p + trie.terminal[u] * H, gh + u * H, H);
  }

  for (int64_t d = trie.depth() - 1; d >= 0; --d) {
    // Level d's dh and dc_carry are complete (level d+1 ran); its parents' are filled here.
    for_level_chunks(trie, d, H, [&](int64_t begin, int64_t end, int64_t rank_begin, int64_t rank_end) {
      for (int64_t k = begin; k < end; ++k) {
        cell_backward_row(act + k * H4, tc + k * H, dh_p + k * H, trie.parent[k] < 0 ? nullptr : c + trie.parent[k] * H,
                          carry + k * H, dg + k * H4, H);
      }
      if (rank_end == rank_begin) return;  // depth-1 nodes start from the zero state: nothing flows further
      // Parents: sum their children, then dh += S @ W.
      for (int64_t r = rank_begin; r < rank_end; ++r) {
        scalar_t* s_row = S + r * H4;
        scalar_t* carry_row = carry + trie.internal[r] * H;
        std::memcpy(s_row, dg + trie.child_begin[r] * H4, sizeof(scalar_t) * H4);
        std::memcpy(carry_row, carry + trie.child_begin[r] * H, sizeof(scalar_t) * H);
        for (int64_t child = trie.child_begin[r] + 1; child < trie.child_end[r]; ++child) {
          add_row(s_row, dg + child * H4, H4);
          add_row(carry_row, carry + child * H, H);
        }
      }
      const at::Tensor dh_parents = at::mm(child_sum.narrow(0, rank_begin, rank_end - rank_begin), weight_hh);
      const scalar_t* dhp = dh_parents.data_ptr<scalar_t>();  // [parents, H]
      for (int64_t r = rank_begin; r < rank_end; ++r) add_row(dh_p + trie.internal[r] * H, dhp + (r - rank_begin) * H, H);
    });
  }

  // dW = S^T @ h of the internal nodes (h = o * tanh(c)), one GEMM over the whole trie.
  at::Tensor internal_h = at::empty({trie.n_internal(), H}, node_c.options());  // [k, H]
  scalar_t* ih = internal_h.data_ptr<scalar_t>();
  at::parallel_for(0, trie.n_internal(), row_grain(H), [&](int64_t lo, int64_t hi_row) {
    for (int64_t r = lo; r < hi_row; ++r) {
      const int64_t k = trie.internal[r];
      for (int64_t j = 0; j < H; ++j) ih[r * H + j] = act[k * H4 + 3 * H + j] * tc[k * H + j];
    }
  });
  grad_weight_hh.copy_(at::mm(child_sum.t(), internal_h));
  // dG: scatter-add of dgates by char (serial: nodes share chars; one pass over [n, 4H]).
  grad_gate_table.zero_();
  scalar_t* dG = grad_gate_table.data_ptr<scalar_t>();
  for (int64_t k = 0; k < n; ++k) add_row(dG + trie.chars[k] * H4, dg + k * H4, H4);
}

// The ops compute in their inputs' dtype: the GEMMs inside must not be recast by an
// autocast region around the call (CPU bfloat16 autocast would turn them to bfloat16).
struct NoAutocast {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::autocast_dispatch_keyset};
};

void check_weights(const at::Tensor& gate_table, const at::Tensor& weight_hh, const char* op) {
  TORCH_CHECK(gate_table.scalar_type() == at::kFloat || gate_table.scalar_type() == at::kDouble, op,
              ": gate_table must be float32 or float64 (the Python wrapper computes float16/bfloat16 in float32), got ",
              gate_table.scalar_type());
  TORCH_CHECK(weight_hh.scalar_type() == gate_table.scalar_type(), op, ": weight_hh must have gate_table's dtype ",
              gate_table.scalar_type(), ", got ", weight_hh.scalar_type());
  TORCH_CHECK(gate_table.device().is_cpu() && weight_hh.device().is_cpu(), op,
              ": gate_table and weight_hh must be CPU tensors, got ", gate_table.device(), " and ", weight_hh.device());
  TORCH_CHECK(weight_hh.dim() == 2 && weight_hh.size(0) == 4 * weight_hh.size(1) && weight_hh.size(1) >= 1, op,
              ": weight_hh must be [4H, H] with H >= 1, got shape ", shape_of(weight_hh));
  TORCH_CHECK(gate_table.dim() == 2 && gate_table.size(1) == weight_hh.size(0) && gate_table.size(0) >= 1, op,
              ": gate_table must be [C, 4H] = [C, ", text(weight_hh.size(0)), "] with C >= 1, got shape ", shape_of(gate_table));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> trie_lstm_forward(const at::Tensor& gate_table,
                                                                 const at::Tensor& weight_hh,
                                                                 const at::Tensor& trie_nodes,
                                                                 const at::Tensor& token_node, const at::Tensor& ids) {
  constexpr const char* op = "charfast::trie_lstm_forward";
  const NoAutocast no_autocast;
  check_weights(gate_table, weight_hh, op);
  const BatchTrie trie = select_batch_trie(trie_nodes, token_node, ids, gate_table.size(0), op);
  const at::Tensor G = gate_table.contiguous(), W = weight_hh.contiguous();
  const int64_t H = W.size(1);
  at::Tensor h = at::empty({ids.size(0), H}, G.options());
  at::Tensor node_act = at::empty({trie.n_nodes, 4 * H}, G.options());
  at::Tensor node_c = at::empty({trie.n_nodes, H}, G.options());
  AT_DISPATCH_FLOATING_TYPES(G.scalar_type(), "trie_lstm_forward",
                             [&] { trie_forward<scalar_t>(trie, G, W, h, node_act, node_c); });
  return {h, node_act, node_c};
}

std::tuple<at::Tensor, at::Tensor> trie_lstm_backward(const at::Tensor& grad_h, const at::Tensor& weight_hh,
                                                      const at::Tensor& node_act, const at::Tensor& node_c,
                                                      const at::Tensor& trie_nodes, const at::Tensor& token_node,
                                                      const at::Tensor& ids, int64_t n_chars) {
  constexpr const char* op = "charfast::trie_lstm_backward";
  const NoAutocast no_autocast;
  TORCH_CHECK(n_chars >= 1, op, ": n_chars must be >= 1, got ", text(n_chars));
  const BatchTrie trie = select_batch_trie(trie_nodes, token_node, ids, n_chars, op);
  const at::Tensor W = weight_hh.contiguous();
  check_weights(at::empty({n_chars, W.size(0)}, W.options().device(at::kCPU)), W, op);
  const int64_t H = W.size(1);
  const auto check_saved = [&](const char* name, const at::Tensor& tensor, int64_t rows, int64_t cols) {
    TORCH_CHECK(tensor.scalar_type() == W.scalar_type() && tensor.device().is_cpu() && tensor.dim() == 2 &&
                    tensor.size(0) == rows && tensor.size(1) == cols,
                op, ": ", name, " must be a ", W.scalar_type(), " CPU tensor of shape [", text(rows), ", ", text(cols),
                "] (as trie_lstm_forward returns for the same ids), got ", tensor.scalar_type(), " of shape ",
                shape_of(tensor));
  };
  check_saved("grad_h", grad_h, ids.size(0), H);
  check_saved("node_act", node_act, trie.n_nodes, 4 * H);
  check_saved("node_c", node_c, trie.n_nodes, H);
  at::Tensor grad_gate_table = at::empty({n_chars, 4 * H}, W.options());
  at::Tensor grad_weight_hh = at::empty_like(W);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "trie_lstm_backward", [&] {
    trie_backward<scalar_t>(trie, grad_h, W, node_act.contiguous(), node_c.contiguous(), grad_gate_table,
                            grad_weight_hh);
  });
  return {grad_gate_table, grad_weight_hh};
}

// [n_nodes, n_internal, depth] of a batch's trie: how many LSTM steps and GEMM rows it costs.
std::vector<int64_t> trie_batch_stats(const at::Tensor& trie_nodes, const at::Tensor& token_node, const at::Tensor& ids) {
  const BatchTrie trie =
      select_batch_trie(trie_nodes, token_node, ids, std::numeric_limits<int64_t>::max(), "charfast::trie_batch_stats");
  return {trie.n_nodes, trie.n_internal(), trie.depth()};
}

}  // namespace

TORCH_LIBRARY(charfast, m) {
  // Index bookkeeping with no gradient: one kernel for every backend key.
  m.def("build_vocab_trie(Tensor chars, Tensor lengths, int n_chars) -> (Tensor, Tensor)", &build_vocab_trie);
  m.def("trie_batch_stats(Tensor trie_nodes, Tensor token_node, Tensor ids) -> int[]", &trie_batch_stats);
  m.def("trie_lstm_forward(Tensor gate_table, Tensor weight_hh, Tensor trie_nodes, Tensor token_node, Tensor ids)"
        " -> (Tensor, Tensor, Tensor)");
  m.def("trie_lstm_backward(Tensor grad_h, Tensor weight_hh, Tensor node_act, Tensor node_c, Tensor trie_nodes,"
        " Tensor token_node, Tensor ids, int n_chars) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(charfast, CPU, m) {
  m.impl("trie_lstm_forward", &trie_lstm_forward);
  m.impl("trie_lstm_backward", &trie_lstm_backward);
}

}  // namespace charfast

// `import charfast._C` loads this library (and so registers the ops) as a Python module.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
