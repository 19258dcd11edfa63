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
// only on the parent, so it is one GEMM per level over the previous level's internal nodes
// (leaves have no children and need none). Backward, level by level in reverse: a node's dh
// and dc collect its outputs' gradients plus its children's; the children's dgates summed
// per parent (S [k, 4H]) give the parents' dh = S @ W per level, and dW = S^T @ h_internal
// as one GEMM after the recurrence; dG is a scatter-add of dgates by char.
//
// Saving the activations and c (5H per node) lets backward skip recomputing the forward; h
// and tanh(c) are recomputed from them with one vectorised tanh over all nodes.
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

// Rows per parallel chunk: ATen's default grain (32768 elements), so small levels run inline.
int64_t row_grain(int64_t row_elements) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(row_elements, 1)); }

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
    const int64_t begin = trie.level_begin[d], end = trie.level_begin[d + 1];
    // recurrent [k_prev, 4H]: h @ W^T of the previous level's internal nodes (the parents)
    at::Tensor recurrent;
    int64_t parent_rank0 = 0;
    if (d > 0) {
      parent_rank0 = trie.internal_level_begin[d - 1];
      recurrent = at::mm(internal_h.narrow(0, parent_rank0, trie.internal_level_begin[d] - parent_rank0), weight_t);
    }
    const scalar_t* rec = d > 0 ? recurrent.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(begin, end, row_grain(H4), [&](int64_t lo, int64_t hi_row) {
      for (int64_t k = lo; k < hi_row; ++k) {
        scalar_t* a = act + k * H4;
        const scalar_t* g_row = G + trie.chars[k] * H4;
        if (rec == nullptr) {
          std::memcpy(a, g_row, sizeof(scalar_t) * H4);
        } else {
          const scalar_t* r_row = rec + (trie.internal_rank[trie.parent[k]] - parent_rank0) * H4;
          for (int64_t j = 0; j < H4; ++j) a[j] = g_row[j] + r_row[j];
        }
      }
    });
    // The nonlinearities through ATen's vectorised kernels (the same functions as the reference).
    at::Tensor level_act = node_act.narrow(0, begin, end - begin);  // [m, 4H]
    level_act.narrow(1, 0, 2 * H).sigmoid_();
    level_act.narrow(1, 2 * H, H).tanh_();
    level_act.narrow(1, 3 * H, H).sigmoid_();
    at::parallel_for(begin, end, row_grain(H4), [&](int64_t lo, int64_t hi_row) {
      for (int64_t k = lo; k < hi_row; ++k) {
        const scalar_t* a = act + k * H4;
        scalar_t* c_row = c + k * H;
        if (trie.parent[k] < 0) {
          for (int64_t j = 0; j < H; ++j) c_row[j] = a[j] * a[2 * H + j];
        } else {
          const scalar_t* c_parent = c + trie.parent[k] * H;
          for (int64_t j = 0; j < H; ++j) c_row[j] = a[H + j] * c_parent[j] + a[j] * a[2 * H + j];
        }
      }
    });
    at::Tensor level_h = node_h.narrow(0, begin, end - begin);  // [m, H]: tanh(c) here, times o below
    at::tanh_out(level_h, node_c.narrow(0, begin, end - begin));
    at::parallel_for(begin, end, row_grain(H4), [&](int64_t lo, int64_t hi_row) {
      for (int64_t k = lo; k < hi_row; ++k) {
        const scalar_t* o = act + k * H4 + 3 * H;
        scalar_t* h_row = h + k * H;
        for (int64_t j = 0; j < H; ++j) h_row[j] *= o[j];
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
  const at::Tensor tanh_c = node_c.tanh();                            // [n, H]
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
    if (trie.terminal[u] < 0) continue;
    scalar_t* row = dh_p + trie.terminal[u] * H;
    for (int64_t j = 0; j < H; ++j) row[j] += gh[u * H + j];
  }

  for (int64_t d = trie.depth() - 1; d >= 0; --d) {
    at::parallel_for(trie.level_begin[d], trie.level_begin[d + 1], row_grain(H4), [&](int64_t lo, int64_t hi_row) {
      for (int64_t k = lo; k < hi_row; ++k) {
        const scalar_t* i = act + k * H4;
        const scalar_t* f = i + H;
        const scalar_t* g = i + 2 * H;
        const scalar_t* o = i + 3 * H;
        const scalar_t* t = tc + k * H;
        const scalar_t* dh_row = dh_p + k * H;
        const scalar_t* c_parent = trie.parent[k] < 0 ? nullptr : c + trie.parent[k] * H;
        scalar_t* carry_row = carry + k * H;
        scalar_t* dg_row = dg + k * H4;
        for (int64_t j = 0; j < H; ++j) {
          const scalar_t dc = carry_row[j] + dh_row[j] * o[j] * (scalar_t(1) - t[j] * t[j]);
          const scalar_t cp = c_parent == nullptr ? scalar_t(0) : c_parent[j];
          dg_row[j] = dc * g[j] * i[j] * (scalar_t(1) - i[j]);
          dg_row[H + j] = dc * cp * f[j] * (scalar_t(1) - f[j]);
          dg_row[2 * H + j] = dc * i[j] * (scalar_t(1) - g[j] * g[j]);
          dg_row[3 * H + j] = dh_row[j] * t[j] * o[j] * (scalar_t(1) - o[j]);
          carry_row[j] = dc * f[j];
        }
      }
    });
    if (d == 0) break;  // depth-1 nodes start from the zero state: nothing flows further
    // Parents (internal nodes one level up): sum their children, then dh += S @ W.
    const int64_t r0 = trie.internal_level_begin[d - 1], r1 = trie.internal_level_begin[d];
    at::parallel_for(r0, r1, row_grain(H4), [&](int64_t lo, int64_t hi_row) {
      for (int64_t r = lo; r < hi_row; ++r) {
        scalar_t* s_row = S + r * H4;
        scalar_t* carry_row = carry + trie.internal[r] * H;
        std::memcpy(s_row, dg + trie.child_begin[r] * H4, sizeof(scalar_t) * H4);
        std::memcpy(carry_row, carry + trie.child_begin[r] * H, sizeof(scalar_t) * H);
        for (int64_t child = trie.child_begin[r] + 1; child < trie.child_end[r]; ++child) {
          const scalar_t* dg_child = dg + child * H4;
          const scalar_t* carry_child = carry + child * H;
          for (int64_t j = 0; j < H4; ++j) s_row[j] += dg_child[j];
          for (int64_t j = 0; j < H; ++j) carry_row[j] += carry_child[j];
        }
      }
    });
    const at::Tensor dh_parents = at::mm(child_sum.narrow(0, r0, r1 - r0), weight_hh);  // [k_level, H]
    const scalar_t* dhp = dh_parents.data_ptr<scalar_t>();
    at::parallel_for(r0, r1, row_grain(H), [&](int64_t lo, int64_t hi_row) {
      for (int64_t r = lo; r < hi_row; ++r) {
        scalar_t* row = dh_p + trie.internal[r] * H;
        for (int64_t j = 0; j < H; ++j) row[j] += dhp[(r - r0) * H + j];
      }
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
  const at::Tensor chars = at::tensor(trie.chars, at::kLong);  // [n]
  grad_gate_table.zero_().index_add_(0, chars, dgates);
}

void check_weights(const at::Tensor& gate_table, const at::Tensor& weight_hh, const char* op) {
  TORCH_CHECK(gate_table.scalar_type() == at::kFloat || gate_table.scalar_type() == at::kDouble, op,
              ": gate_table must be float32 or float64 (the Python wrapper computes float16/bfloat16 in float32), got ",
              gate_table.scalar_type());
  TORCH_CHECK(weight_hh.scalar_type() == gate_table.scalar_type(), op, ": weight_hh must have gate_table's dtype ",
              gate_table.scalar_type(), ", got ", weight_hh.scalar_type());
  TORCH_CHECK(gate_table.device().is_cpu() && weight_hh.device().is_cpu(), op,
              ": gate_table and weight_hh must be CPU tensors, got ", gate_table.device(), " and ", weight_hh.device());
  TORCH_CHECK(weight_hh.dim() == 2 && weight_hh.size(0) == 4 * weight_hh.size(1) && weight_hh.size(1) >= 1, op,
              ": weight_hh must be [4H, H] with H >= 1, got shape ", weight_hh.sizes());
  TORCH_CHECK(gate_table.dim() == 2 && gate_table.size(1) == weight_hh.size(0) && gate_table.size(0) >= 1, op,
              ": gate_table must be [C, 4H] = [C, ", weight_hh.size(0), "] with C >= 1, got shape ", gate_table.sizes());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> trie_lstm_forward(const at::Tensor& gate_table,
                                                                 const at::Tensor& weight_hh,
                                                                 const at::Tensor& trie_nodes,
                                                                 const at::Tensor& token_node, const at::Tensor& ids) {
  constexpr const char* op = "charfast::trie_lstm_forward";
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
  TORCH_CHECK(n_chars >= 1, op, ": n_chars must be >= 1, got ", n_chars);
  const BatchTrie trie = select_batch_trie(trie_nodes, token_node, ids, n_chars, op);
  const at::Tensor W = weight_hh.contiguous();
  check_weights(at::empty({n_chars, W.size(0)}, W.options().device(at::kCPU)), W, op);
  const int64_t H = W.size(1);
  const auto check_saved = [&](const char* name, const at::Tensor& tensor, int64_t rows, int64_t cols) {
    TORCH_CHECK(tensor.scalar_type() == W.scalar_type() && tensor.device().is_cpu() && tensor.dim() == 2 &&
                    tensor.size(0) == rows && tensor.size(1) == cols,
                op, ": ", name, " must be a ", W.scalar_type(), " CPU tensor of shape [", rows, ", ", cols,
                "] (as trie_lstm_forward returns for the same ids), got ", tensor.scalar_type(), " of shape ",
                tensor.sizes());
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
