# Node pools derived from profiles/, so the nodes and the profiles cannot disagree.
#
# Rule this module keeps: a pool exists because a profile selects it. Its labels are
# the pool label plus every label its profiles' node_selector names; its taints are
# the NoSchedule/NoExecute tolerations that *every* profile of the pool carries (a
# taint some profile of the pool does not tolerate would keep that profile off its
# own pool). Profiles with no pool label go to `default_pool`, which has no taint
# and always exists (the chart's own pods run there).

locals {
  files = sort(fileset(var.profiles_dir, "*.{yaml,yml}"))
  profiles = {
    for f in local.files : yamldecode(file("${var.profiles_dir}/${f}")).name => yamldecode(file("${var.profiles_dir}/${f}"))
  }

  pool_of = {
    for name, p in local.profiles : name => try(p.node_selector[var.pool_label], var.default_pool)
  }
  # The default pool exists even when every profile names another: the hub runs there.
  pool_names = sort(distinct(concat([var.default_pool], values(local.pool_of))))
  members    = { for pool in local.pool_names : pool => sort([for name, p in local.pool_of : name if p == pool]) }

  # Kubernetes taint effects a toleration can name, and EKS's spelling of each.
  eks_effects = {
    NoSchedule       = "NO_SCHEDULE"
    NoExecute        = "NO_EXECUTE"
    PreferNoSchedule = "PREFER_NO_SCHEDULE"
  }

  # profile -> the taints it tolerates (a toleration without an effect tolerates all
  # effects, but a taint needs one: NoSchedule, the effect that keeps others off).
  tolerated = {
    for name, p in local.profiles : name => toset([
      for t in try(p.tolerations, []) : {
        key    = t.key
        value  = try(t.operator, "Equal") == "Exists" ? var.exists_taint_value : try(t.value, "")
        effect = try(t.effect, "NoSchedule")
      } if contains(["NoSchedule", "NoExecute"], try(t.effect, "NoSchedule")) && try(t.key, "") != ""
    ])
  }

  # profile -> the NVIDIA device plugin configuration its GPU slice needs (null: whole
  # GPUs or none): a MIG slice (gpu.resource nvidia.com/mig-...) or a time-sliced share
  # (gpu.shared). The pool's nodes carry it as the plugin's config label.
  sharing_of = {
    for name, p in local.profiles : name => (
      try(p.gpu.shared, false) ? var.device_plugin_configs.shared : (
        startswith(try(p.gpu.resource, ""), "nvidia.com/mig-") ? var.device_plugin_configs.mig : null
      )
    )
  }
  sharing = {
    for pool in local.pool_names : pool => distinct(compact([for name in local.members[pool] : local.sharing_of[name]]))
  }

  pools = {
    for pool in local.pool_names : pool => {
      profiles = local.members[pool]
      labels = merge(concat(
        [for name in local.members[pool] : try(local.profiles[name].node_selector, {})],
        [{ (var.pool_label) = pool }],
        [for config in slice(local.sharing[pool], 0, min(1, length(local.sharing[pool]))) : { (var.device_plugin_config_label) = config }],
      )...)
      taints = pool == var.default_pool ? [] : [
        for t in setintersection([for name in local.members[pool] : local.tolerated[name]]...) : merge(t, {
          eks_effect = local.eks_effects[t.effect]
        })
      ]
      gpu = anytrue([for name in local.members[pool] : try(local.profiles[name].gpu.count, 0) > 0])
    }
  }
}
